"""The columnar write form (`VectorColumns`): the same vectors as a list of `Vector`
messages, packed; everything it stores reads back exactly as the per-vector form stores it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import numpy as np
import pytest

from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import as_dict, reason, rpc_error, struct, vec

pb = vector_pb2
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def columns(
    ids: Sequence[str],
    values: Sequence[Sequence[float]] | bytes,
    metadata: Sequence[Any] | None = None,
    namespace: str = "",
) -> pb.VectorColumns:
    """`metadata` items are dicts (sent as JSON), ready JSON text, or None (sent as "")."""
    packed = values if isinstance(values, bytes) else np.asarray(values, dtype="<f4").tobytes()
    texts = [] if metadata is None else [m if isinstance(m, str) else json.dumps(m) if m else "" for m in metadata]
    return pb.VectorColumns(ids=list(ids), values=packed, metadata_json=texts, namespace=namespace)


def _state(vector, index: str) -> tuple[int, int, list[tuple[str, str]]]:
    info = vector.GetIndex(pb.GetIndexRequest(name=index)).index
    listed = vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_size=1000)).vectors
    return info.vector_count, info.last_mutation_id, [(v.namespace, v.id) for v in listed]


def _everything(vector, index: str) -> list[tuple[str, str, list[float], dict[str, Any]]]:
    listed = vector.ListVectors(
        pb.ListVectorsRequest(index_name=index, page_size=1000, return_values=True, return_metadata=True)
    ).vectors
    return [(v.namespace, v.id, list(v.values), as_dict(v.metadata)) for v in listed]


def test_columns_round_trip_values_and_metadata_exactly(vector, make_index) -> None:
    # Euclidean: Milvus refuses cosine vectors whose squared norm overflows float32 (see below).
    index = make_index(metric=pb.METRIC_EUCLIDEAN)
    values = [[0.1, 0.2, 0.3, 0.4], [1e-30, -3.5, 7.25, 1e30]]
    metadata = [{"tag": "a", "n": 3, "ok": True, "nested": {"k": "v"}, "list": [1, "x"]}, None]
    reply = vector.UpsertVectors(
        pb.UpsertVectorsRequest(index_name=index, columns=columns(["p", "q"], values, metadata, namespace="ns"))
    )
    assert reply.upserted_count == 2 and reply.mutation_id > 0
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["p", "q"], namespace="ns")).vectors
    assert [v.id for v in got] == ["p", "q"] and {v.namespace for v in got} == {"ns"}
    assert [list(v.values) for v in got] == [np.float32(row).tolist() for row in values]
    assert as_dict(got[0].metadata) == metadata[0]
    assert as_dict(got[1].metadata) == {}
    hits = vector.Query(
        pb.QueryRequest(
            index_name=index, vector=[0.1, 0.2, 0.3, 0.4], top_k=2, filter=struct({"nested.k": "v", "n": {"$gte": 3}})
        )
    ).matches
    assert [m.id for m in hits] == ["p"]


def test_columns_store_what_the_per_vector_form_stores(vector, make_index: Callable[..., str]) -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(size=(50, 4)).astype(np.float32)
    metadata = [{"bucket": i % 3, "name": f"doc-{i}", "flag": i % 2 == 0} for i in range(50)]
    ids = [f"id-{i}" for i in range(50)]
    by_message, by_columns = make_index(), make_index()
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(
            index_name=by_message,
            vectors=[vec(i, v.tolist(), m) for i, v, m in zip(ids, values, metadata, strict=True)],
        )
    )
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(index_name=by_columns, columns=columns(ids, values.tobytes(), metadata))
    )
    assert _everything(vector, by_message) == _everything(vector, by_columns)
    for index in (by_message, by_columns):
        assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 50
    query = pb.QueryRequest(vector=values[3].tolist(), top_k=5, filter=struct({"bucket": {"$in": [0, 2]}}))
    results = []
    for index in (by_message, by_columns):
        query.index_name = index
        results.append([(m.id, round(m.score, 5)) for m in vector.Query(query).matches])
    assert results[0] == results[1] and len(results[0]) == 5


def test_insert_columns_skips_existing_ids(vector, index: str) -> None:
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0], {"v": 1})]))
    reply = vector.InsertVectors(
        pb.InsertVectorsRequest(
            index_name=index, columns=columns(["a", "b"], [[0, 1, 0, 0], [0, 0, 1, 0]], [{"v": 2}, {"v": 3}])
        )
    )
    assert (reply.inserted_count, reply.skipped_count, list(reply.skipped_ids)) == (1, 1, ["a"])
    got = {
        v.id: as_dict(v.metadata)
        for v in vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a", "b"])).vectors
    }
    assert got == {"a": {"v": 1}, "b": {"v": 3}}


def test_metadata_text_may_carry_whitespace(vector, index: str) -> None:
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(index_name=index, columns=columns(["w"], [[1, 2, 3, 4]], [' \n{ "a" : [ 1 , 2 ] }\t']))
    )
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["w"])).vectors[0]
    assert as_dict(got.metadata) == {"a": [1, 2]}


@pytest.mark.parametrize("metric", [pb.METRIC_EUCLIDEAN, pb.METRIC_DOT_PRODUCT])
def test_values_whose_squares_overflow_or_underflow_are_accepted(vector, make_index, metric: int) -> None:
    """Finite values at either end of float32's range pass the checks: 1e30 squared overflows,
    and 1e-30 squared is 0, yet neither vector is infinite or all zeros. (On a cosine index FAISS
    scores such vectors by direction, `tests/vector/test_cosine_norms.py`, and Milvus, which
    computes cosine norms in float32, refuses them, `tests/vector/test_milvus.py`.)"""
    index = make_index(metric=metric)
    values = [[3e38, -3e38, 1, 0], [1e-30, 0, 0, -1e-30]]
    reply = vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, columns=columns(["big", "tiny"], values)))
    assert reply.upserted_count == 2
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["big", "tiny"])).vectors
    assert [list(v.values) for v in got] == [np.float32(row).tolist() for row in values]


FOUR = [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("batch", "words", "why"),
    [
        (columns(["a"], [[1, 0, 0]]), ["12 bytes", "16"], "DIMENSION_MISMATCH"),
        (columns(["a", "b"], [FOUR]), ["2 vectors", "32"], "DIMENSION_MISMATCH"),
        (columns(["a"], [[1, 0, 0, math.nan]]), ["'a'", "nan"], "NON_FINITE_VALUE"),
        (columns(["a", "b"], [FOUR, [0, 0, 0, 0]]), ["'b'", "zero"], "ZERO_VECTOR"),
        (columns(["a", "b", "c"], [FOUR, [1, -math.inf, 0, 0], FOUR]), ["'b'", "infinite"], "NON_FINITE_VALUE"),
        (columns(["a", "b"], [[1e30, 0, 0, 0], [1e30, math.nan, 0, 0]]), ["'b'", "nan"], "NON_FINITE_VALUE"),
        (columns(["a", "a"], [FOUR, FOUR]), ["'a'", "more than once"], "DUPLICATE_ID"),
        (columns(["a", ""], [FOUR, FOUR]), ["id", "empty"], "INVALID_ID"),
        (columns(["x" * 65], [FOUR]), ["65 bytes", "64"], "INVALID_ID"),
        (columns(["é" * 33], [FOUR]), ["66 bytes"], "INVALID_ID"),
        (columns(["a"], [FOUR], namespace="n" * 65), ["namespace"], "INVALID_NAMESPACE"),
        (columns(["a", "b"], [FOUR, FOUR], [{"v": 1}]), ["1 entries", "2 ids"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ["{not json"]), ["'a'", "not valid json"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ['{"a": 1} {"b": 2}']), ["'a'", "not valid json"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ["[1, 2]"]), ["'a'", "json object", "list"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ['{"x": NaN}']), ["'a'", "nan"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ['{"x": 1e400}']), ["'a'", "not valid json", "infinity"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ['{"x": "\\ud800"}']), ["'a'", "not valid json", "surrogate"], "INVALID_METADATA"),
        (
            columns(list("abcde"), [FOUR] * 5, [{"k": 1}, {"k": 2}, '{"k": 3,}', {"k": 4}, {"k": 5}]),
            ["'c'", "not valid json"],
            "INVALID_METADATA",
        ),
        (columns(list("ab"), [FOUR] * 2, [{"k": 1}, "[]"]), ["'b'", "json object", "list"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], [json.dumps({"t": "x" * 10_300})]), ["'a'", "10240"], "METADATA_TOO_LARGE"),
        (columns(["a"], [FOUR], ['{"a":' * 33 + "1" + "}" * 33]), ["'a'", "32 levels"], "INVALID_METADATA"),
        (columns(["a"], [FOUR], ['{"a":' + "[" * 3000 + "]" * 3000 + "}"]), ["'a'", "32 levels"], "INVALID_METADATA"),
        (columns([], b""), ["1..5000", "0"], "INVALID_BATCH_SIZE"),
    ],
)
def test_bad_columns_change_nothing(vector, index: str, batch: pb.VectorColumns, words: list[str], why: str) -> None:
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("keep", [0, 0, 1, 0])]))
    before = _state(vector, index)
    for rpc, request in (
        (vector.UpsertVectors, pb.UpsertVectorsRequest(index_name=index, columns=batch)),
        (vector.InsertVectors, pb.InsertVectorsRequest(index_name=index, columns=batch)),
    ):
        error = rpc_error(lambda rpc=rpc, request=request: rpc(request), INVALID, *words)
        assert reason(error) == why
    assert _state(vector, index) == before


def test_metadata_nested_to_the_limit_is_accepted(vector, index: str) -> None:
    deep = '{"a":' * 31 + "[1]" + "}" * 31  # 31 objects and a list: 32 levels
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, columns=columns(["d"], [FOUR], [deep])))
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["d"])).vectors[0]
    assert as_dict(got.metadata) == json.loads(deep)


def test_vectors_and_columns_together_are_rejected(vector, index: str) -> None:
    request = pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", FOUR)], columns=columns(["b"], [FOUR]))
    error = rpc_error(lambda: vector.UpsertVectors(request), INVALID, "vectors or columns")
    assert reason(error) == "VECTORS_OR_COLUMNS"
    assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 0


def test_columns_into_an_unknown_index_is_not_found(vector) -> None:
    request = pb.UpsertVectorsRequest(index_name="no-such-index", columns=columns(["a"], [FOUR]))
    rpc_error(lambda: vector.UpsertVectors(request), grpc.StatusCode.NOT_FOUND, "no-such-index")
