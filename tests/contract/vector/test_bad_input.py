"""Every malformed request gets a precise status, and changes nothing."""

from __future__ import annotations

import math
from collections.abc import Callable

import grpc
import pytest

from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import rpc_error, struct, vec

pb = vector_pb2
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _state(vector, index: str) -> tuple[int, int, list[str]]:
    info = vector.GetIndex(pb.GetIndexRequest(name=index)).index
    ids = [v.id for v in vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_size=1000)).vectors]
    return info.vector_count, info.last_mutation_id, ids


@pytest.mark.parametrize(
    ("request_kwargs", "words"),
    [
        ({"name": "", "dimensions": 4, "metric": pb.METRIC_COSINE}, ["name"]),
        ({"name": "bad name!", "dimensions": 4, "metric": pb.METRIC_COSINE}, ["bad name!"]),
        ({"name": "x" * 65, "dimensions": 4, "metric": pb.METRIC_COSINE}, ["name"]),
        ({"name": "ok", "dimensions": 0, "metric": pb.METRIC_COSINE}, ["dimensions", "0"]),
        ({"name": "ok", "dimensions": 4097, "metric": pb.METRIC_COSINE}, ["dimensions", "4097"]),
        ({"name": "ok", "dimensions": 4}, ["metric"]),
        ({"name": "ok", "dimensions": 4, "metric": 99}, ["metric"]),
        ({"name": "ok", "dimensions": 4, "metric": pb.METRIC_COSINE, "index_type": 99}, ["index_type"]),
        (
            {
                "name": "ok",
                "dimensions": 4,
                "metric": pb.METRIC_COSINE,
                "index_type": pb.INDEX_TYPE_HNSW,
                "hnsw": {"m": 2},
            },
            ["hnsw.m", "2"],
        ),
        (
            {"name": "ok", "dimensions": 4, "metric": pb.METRIC_COSINE, "hnsw": {"m": 16}},
            ["hnsw"],
        ),
        ({"name": "ok", "dimensions": 4, "metric": pb.METRIC_COSINE, "description": "d" * 1025}, ["description"]),
    ],
)
def test_create_index_rejects(vector, request_kwargs: dict, words: list[str]) -> None:
    rpc_error(lambda: vector.CreateIndex(pb.CreateIndexRequest(**request_kwargs)), INVALID, *words)


def test_unknown_index_is_not_found_everywhere(vector) -> None:
    missing = "no-such-index"
    calls = [
        lambda: vector.GetIndex(pb.GetIndexRequest(name=missing)),
        lambda: vector.DeleteIndex(pb.DeleteIndexRequest(name=missing)),
        lambda: vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=missing, vectors=[vec("a", [1, 0, 0, 0])])),
        lambda: vector.InsertVectors(pb.InsertVectorsRequest(index_name=missing, vectors=[vec("a", [1, 0, 0, 0])])),
        lambda: vector.Query(pb.QueryRequest(index_name=missing, vector=[1, 0, 0, 0], top_k=1)),
        lambda: vector.GetVectors(pb.GetVectorsRequest(index_name=missing, ids=["a"])),
        lambda: vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=missing, ids=["a"])),
        lambda: vector.ListVectors(pb.ListVectorsRequest(index_name=missing)),
    ]
    for call in calls:
        rpc_error(call, grpc.StatusCode.NOT_FOUND, missing)


@pytest.mark.parametrize(
    ("vectors", "words"),
    [
        ([vec("a", [1, 0, 0])], ["'a'", "3 values", "4 dimensions"]),
        ([vec("a", [1, 0, 0, math.nan])], ["'a'", "nan"]),
        ([vec("a", [1, math.inf, 0, 0])], ["'a'", "infinite"]),
        ([vec("", [1, 0, 0, 0])], ["id", "empty"]),
        ([vec("x" * 65, [1, 0, 0, 0])], ["65 bytes", "64"]),
        ([vec("é" * 33, [1, 0, 0, 0])], ["66 bytes"]),
        ([vec("a", [1, 0, 0, 0], {"text": "x" * 10_300})], ["'a'", "metadata", "10240"]),
        ([vec("a", [1, 0, 0, 0], {"score": math.nan})], ["'a'", "metadata", "nan"]),
        ([vec("a", [1, 0, 0, 0], {"deep": {"score": -math.inf}})], ["'a'", "metadata", "infinity"]),
        ([vec("a", [1, 0, 0, 0]), vec("a", [0, 1, 0, 0])], ["'a'", "more than once"]),
        ([vec("a", [0, 0, 0, 0])], ["'a'", "zero"]),
        ([vec("a", [1, 0, 0, 0], namespace="n" * 65)], ["namespace"]),
        ([], ["1..5000", "0"]),
    ],
)
def test_bad_batches_change_nothing(vector, index: str, vectors: list, words: list[str]) -> None:
    good = vec("keep", [0, 0, 1, 0])
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[good]))
    before = _state(vector, index)
    batch = [vec("fine", [1, 1, 1, 1]), *vectors] if vectors else []
    for rpc, request in (
        (vector.UpsertVectors, pb.UpsertVectorsRequest(index_name=index, vectors=batch)),
        (vector.InsertVectors, pb.InsertVectorsRequest(index_name=index, vectors=batch)),
    ):
        rpc_error(lambda rpc=rpc, request=request: rpc(request), INVALID, *words)
    assert _state(vector, index) == before


def test_oversized_batch_is_rejected(vector, index: str) -> None:
    batch = [vec(f"v{i}", [1, 0, 0, 0]) for i in range(5001)]
    rpc_error(lambda: vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=batch)), INVALID, "5001")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"vector": [1, 0, 0, 0], "top_k": 0}, ["top_k", "0"]),
        ({"vector": [1, 0, 0, 0], "top_k": 101}, ["top_k", "101"]),
        ({"vector": [1, 0], "top_k": 1}, ["2 values", "4 dimensions"]),
        ({"vector": [1, 0, 0, math.nan], "top_k": 1}, ["nan"]),
        ({"vector": [0, 0, 0, 0], "top_k": 1}, ["zero"]),
    ],
)
def test_bad_queries(vector, index: str, kwargs: dict, words: list[str]) -> None:
    rpc_error(lambda: vector.Query(pb.QueryRequest(index_name=index, **kwargs)), INVALID, *words)


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ({"a": {"$regex": "x"}}, ["$regex"]),
        ({"$xor": [{"a": 1}]}, ["$xor"]),
        ({"$or": []}, ["$or", "non-empty"]),
        ({"$and": {"a": 1}}, ["$and"]),
        ({"a": {"$in": []}}, ["$in", "non-empty"]),
        ({"a": {"$in": "x"}}, ["$in", "list"]),
        ({"a": {"$gt": True}}, ["$gt", "boolean"]),
        ({"a": {"$eq": {"b": 1}}}, ["$eq", "object"]),
        ({"a": None}, ["null"]),
        ({"a": [1, 2]}, ["list"]),
        ({"a..b": 1}, ["a..b"]),
        ({"a": {}}, ["empty"]),
        ({"$not": [{"a": 1}]}, ["object"]),
        ({"a": {"$lt": math.nan}}, ["$lt", "finite"]),
        ({"a": math.inf}, ["finite"]),
        ({"a": {"$in": [1, -math.inf]}}, ["$in", "finite"]),
    ],
)
def test_malformed_filters(vector, index: str, where: dict, words: list[str]) -> None:
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0], {"a": 1})]))
    before = _state(vector, index)
    flt = struct(where)
    calls: list[Callable[[], object]] = [
        lambda: vector.Query(pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=1, filter=flt)),
        lambda: vector.GetVectors(pb.GetVectorsRequest(index_name=index, filter=flt)),
        lambda: vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, filter=flt)),
        lambda: vector.ListVectors(pb.ListVectorsRequest(index_name=index, filter=flt)),
    ]
    for call in calls:
        rpc_error(call, INVALID, "filter", *words)
    assert _state(vector, index) == before


def test_ids_or_filter_exactly_one(vector, index: str) -> None:
    both_get = pb.GetVectorsRequest(index_name=index, ids=["a"], filter=struct({"a": 1}))
    neither_get = pb.GetVectorsRequest(index_name=index)
    both_del = pb.DeleteVectorsRequest(index_name=index, ids=["a"], filter=struct({"a": 1}))
    neither_del = pb.DeleteVectorsRequest(index_name=index)
    rpc_error(lambda: vector.GetVectors(both_get), INVALID, "not both")
    rpc_error(lambda: vector.GetVectors(neither_get), INVALID, "ids or a filter")
    rpc_error(lambda: vector.DeleteVectors(both_del), INVALID, "not both")
    rpc_error(lambda: vector.DeleteVectors(neither_del), INVALID, "ids or a filter")


def test_bad_page_tokens_and_sizes(vector, index: str) -> None:
    rpc_error(
        lambda: vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_token="%%%garbage")),
        INVALID,
        "page token",
    )
    rpc_error(
        lambda: vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_token="WyJhIl0")),  # ["a"]
        INVALID,
        "page token",
    )
    rpc_error(lambda: vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_size=1001)), INVALID, "1001")
    rpc_error(lambda: vector.ListIndexes(pb.ListIndexesRequest(page_size=-1)), INVALID, "page_size")
    rpc_error(lambda: vector.ListIndexes(pb.ListIndexesRequest(page_token="!!")), INVALID, "page token")
