"""Filter semantics, checked against a table of records and hand-computed answers."""

from __future__ import annotations

import grpc
import pytest

from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import rpc_error, struct, vec

pb = vector_pb2

RECORDS = {
    "r1": {"genre": "drama", "year": 1999, "rating": 7.5, "draft": False, "author": {"name": "ann", "age": 40}},
    "r2": {"genre": "comedy", "year": 2005, "rating": 6.0, "draft": True, "author": {"name": "bob", "age": 30}},
    "r3": {"genre": "drama", "year": 2010, "rating": 8.1, "author": {"name": "cid", "age": 50}},
    "r4": {"genre": "horror", "year": 2020, "draft": False},
    "r5": {"genre": "Drama", "year": 2000, "rating": 9.0, "author": {"name": "ann", "age": 41}},
    "r6": {"year": "2001", "note": "year is a string here"},
}

CASES = [
    ({"genre": "drama"}, {"r1", "r3"}),
    ({"genre": {"$eq": "drama"}}, {"r1", "r3"}),
    ({"genre": {"$ne": "drama"}}, {"r2", "r4", "r5", "r6"}),
    ({"genre": {"$in": ["comedy", "horror"]}}, {"r2", "r4"}),
    ({"genre": {"$nin": ["comedy", "horror"]}}, {"r1", "r3", "r5", "r6"}),
    ({"year": {"$gte": 2005}}, {"r2", "r3", "r4"}),
    ({"year": {"$gt": 2005, "$lt": 2020}}, {"r3"}),
    ({"year": {"$lte": 2000}}, {"r1", "r5"}),
    ({"year": {"$lt": "2002"}}, {"r6"}),
    ({"year": 2001}, set()),
    ({"year": "2001"}, {"r6"}),
    ({"rating": {"$gt": 7}}, {"r1", "r3", "r5"}),
    ({"draft": False}, {"r1", "r4"}),
    ({"draft": True}, {"r2"}),
    ({"draft": {"$ne": True}}, {"r1", "r3", "r4", "r5", "r6"}),
    ({"author.name": "ann"}, {"r1", "r5"}),
    ({"author.age": {"$gte": 40, "$lte": 41}}, {"r1", "r5"}),
    ({"genre": "drama", "year": {"$gt": 2000}}, {"r3"}),
    ({"$or": [{"genre": "comedy"}, {"year": {"$gte": 2020}}]}, {"r2", "r4"}),
    ({"$and": [{"genre": "drama"}, {"$or": [{"year": 1999}, {"rating": {"$gt": 8}}]}]}, {"r1", "r3"}),
    ({"$not": {"genre": "drama"}}, {"r2", "r4", "r5", "r6"}),
    ({"$not": {"$or": [{"genre": "drama"}, {"year": {"$lt": 2010}}]}}, {"r4", "r6"}),
    ({"missing.field": "x"}, set()),
    ({}, {"r1", "r2", "r3", "r4", "r5", "r6"}),
]


@pytest.fixture
def table(vector, index: str) -> str:
    vectors = [vec(rid, [1, i, 0, 0], metadata) for i, (rid, metadata) in enumerate(RECORDS.items())]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=vectors))
    return index


def test_every_filter_case_in_query_get_list(vector, table: str) -> None:
    for where, expected in CASES:
        flt = struct(where)
        query = vector.Query(pb.QueryRequest(index_name=table, vector=[1, 0, 0, 0], top_k=100, filter=flt))
        assert {m.id for m in query.matches} == expected, where
        got = vector.GetVectors(pb.GetVectorsRequest(index_name=table, filter=flt)).vectors
        assert [v.id for v in got] == sorted(expected), where
        listed = vector.ListVectors(pb.ListVectorsRequest(index_name=table, filter=flt, page_size=2))
        ids = [v.id for v in listed.vectors]
        while listed.next_page_token:
            listed = vector.ListVectors(
                pb.ListVectorsRequest(index_name=table, filter=flt, page_size=2, page_token=listed.next_page_token)
            )
            ids += [v.id for v in listed.vectors]
        assert ids == sorted(expected), where


def test_filtered_query_ranks_within_the_matches(vector, table: str) -> None:
    # Query towards r3 ([1, 2, 0, 0]): among dramas, r3 is closer than r1.
    matches = vector.Query(
        pb.QueryRequest(index_name=table, vector=[1, 2, 0, 0], top_k=2, filter=struct({"genre": "drama"}))
    ).matches
    assert [m.id for m in matches] == ["r3", "r1"]


def test_filter_and_namespace_combine(vector, index: str) -> None:
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(
            index_name=index,
            vectors=[
                vec("a", [1, 0, 0, 0], {"k": 1}, namespace="n1"),
                vec("b", [1, 0, 0, 0], {"k": 1}, namespace="n2"),
                vec("c", [1, 0, 0, 0], {"k": 2}, namespace="n2"),
            ],
        )
    )
    matches = vector.Query(
        pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=5, filter=struct({"k": 1}), namespace="n2")
    ).matches
    assert [(m.id, m.namespace) for m in matches] == [("b", "n2")]
    gone = vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, filter=struct({"k": 1}), namespace="n2"))
    assert gone.deleted_count == 1
    left = vector.ListVectors(pb.ListVectorsRequest(index_name=index)).vectors
    assert [(v.namespace, v.id) for v in left] == [("n1", "a"), ("n2", "c")]


def test_get_by_filter_refuses_more_than_ten_thousand(vector, make_index) -> None:
    name = make_index(dimensions=2, metric=pb.METRIC_DOT_PRODUCT)
    for start in range(0, 10_001, 5000):
        batch = [vec(f"v{i}", [1, 0], {"all": True}) for i in range(start, min(start + 5000, 10_001))]
        vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=name, vectors=batch))
    rpc_error(
        lambda: vector.GetVectors(pb.GetVectorsRequest(index_name=name, filter=struct({"all": True}))),
        grpc.StatusCode.FAILED_PRECONDITION,
        "10001",
        "ListVectors",
    )
