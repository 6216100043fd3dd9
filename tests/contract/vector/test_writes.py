"""InsertVectors versus UpsertVectors, metrics and scores, namespaces as separate id spaces."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import as_dict, vec

pb = vector_pb2


def test_insert_skips_existing_ids_and_reports_them(vector, index: str) -> None:
    first = vector.InsertVectors(
        pb.InsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0], {"v": 1}), vec("b", [0, 1, 0, 0])])
    )
    assert (first.inserted_count, first.skipped_count, list(first.skipped_ids)) == (2, 0, [])
    second = vector.InsertVectors(
        pb.InsertVectorsRequest(
            index_name=index,
            vectors=[vec("a", [0, 0, 1, 0], {"v": 2}), vec("c", [0, 0, 0, 1]), vec("b", [1, 1, 0, 0])],
        )
    )
    assert (second.inserted_count, second.skipped_count) == (1, 2)
    assert sorted(second.skipped_ids) == ["a", "b"]
    assert second.mutation_id > first.mutation_id
    a = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"])).vectors[0]
    assert list(a.values) == [1, 0, 0, 0] and as_dict(a.metadata) == {"v": 1}
    assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 3


def test_same_id_in_two_namespaces_is_two_vectors(vector, index: str) -> None:
    vector.InsertVectors(
        pb.InsertVectorsRequest(
            index_name=index, vectors=[vec("a", [1, 0, 0, 0], namespace="x"), vec("a", [0, 1, 0, 0], namespace="y")]
        )
    )
    x = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"], namespace="x")).vectors
    y = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"], namespace="y")).vectors
    default = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"])).vectors
    assert [list(v.values) for v in x] == [[1, 0, 0, 0]]
    assert [list(v.values) for v in y] == [[0, 1, 0, 0]]
    assert [v.namespace for v in [*x, *y]] == ["x", "y"]
    assert list(default) == []
    vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, ids=["a"], namespace="x"))
    assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 1


@pytest.mark.parametrize(
    ("metric", "expected"),
    [
        # query (1, 2, 0), vectors near (3, 0, 0) and far (0, 0, 5)
        (pb.METRIC_COSINE, [("near", 1 / math.sqrt(5)), ("far", 0.0)]),
        (pb.METRIC_DOT_PRODUCT, [("near", 3.0), ("far", 0.0)]),
        (pb.METRIC_EUCLIDEAN, [("near", math.sqrt(8)), ("far", math.sqrt(30))]),
    ],
)
def test_scores_per_metric(vector, make_index: Callable[..., str], metric: int, expected: list) -> None:
    name = make_index(dimensions=3, metric=metric)
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(index_name=name, vectors=[vec("near", [3, 0, 0]), vec("far", [0, 0, 5])])
    )
    matches = vector.Query(pb.QueryRequest(index_name=name, vector=[1, 2, 0], top_k=2)).matches
    assert [m.id for m in matches] == [e[0] for e in expected]
    for match, (_, score) in zip(matches, expected, strict=True):
        assert match.score == pytest.approx(score, abs=1e-4)


def test_cosine_returns_the_values_as_stored(vector, index: str) -> None:
    values = [3.0, -4.0, 0.5, 12.25]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", values)]))
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"])).vectors[0]
    assert list(got.values) == values
    match = vector.Query(pb.QueryRequest(index_name=index, vector=values, top_k=1, return_values=True)).matches[0]
    assert list(match.values) == values and match.score == pytest.approx(1.0, abs=1e-5)


def test_metadata_round_trips(vector, index: str) -> None:
    metadata = {"title": "Ünïcode", "n": 3.5, "flag": True, "tags": ["a", "b"], "nested": {"k": "v", "deep": {"x": 1}}}
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0], metadata)]))
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"])).vectors[0]
    assert as_dict(got.metadata) == metadata


def test_top_k_larger_than_the_index(vector, index: str) -> None:
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0])]))
    assert [m.id for m in vector.Query(pb.QueryRequest(index_name=index, vector=[0, 1, 0, 0], top_k=100)).matches] == [
        "a"
    ]


def test_query_on_an_empty_index(vector, index: str) -> None:
    assert list(vector.Query(pb.QueryRequest(index_name=index, vector=[0, 1, 0, 0], top_k=3)).matches) == []


def test_delete_index_drops_its_vectors(vector, make_index: Callable[..., str]) -> None:
    name = make_index()
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=name, vectors=[vec("a", [1, 0, 0, 0])]))
    vector.DeleteIndex(pb.DeleteIndexRequest(name=name))
    vector.CreateIndex(pb.CreateIndexRequest(name=name, dimensions=2, metric=pb.METRIC_DOT_PRODUCT))
    info = vector.GetIndex(pb.GetIndexRequest(name=name)).index
    assert (info.dimensions, info.vector_count, info.last_mutation_id) == (2, 0, 0)
