"""The RPCs the gateway relies on: index lifecycle, upsert, query with filter and namespace,
get, delete by ids and by filter, list."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import as_dict, list_keys, rpc_error, struct, vec

pb = vector_pb2


def test_create_get_list_delete_index(vector, make_index: Callable[..., str]) -> None:
    name = make_index(dimensions=8, metric=pb.METRIC_EUCLIDEAN, description="docs")
    index = vector.GetIndex(pb.GetIndexRequest(name=name)).index
    assert (index.name, index.dimensions, index.metric) == (name, 8, pb.METRIC_EUCLIDEAN)
    assert index.index_type == pb.INDEX_TYPE_FLAT
    assert index.description == "docs"
    assert index.vector_count == 0 and index.last_mutation_id == 0
    assert index.create_time.seconds > 0
    names = []
    token = ""
    while True:
        page = vector.ListIndexes(pb.ListIndexesRequest(page_size=1, page_token=token))
        names += [i.name for i in page.indexes]
        token = page.next_page_token
        if not token:
            break
    assert name in names and names == sorted(names)
    vector.DeleteIndex(pb.DeleteIndexRequest(name=name))
    rpc_error(lambda: vector.GetIndex(pb.GetIndexRequest(name=name)), grpc.StatusCode.NOT_FOUND, name)
    rpc_error(lambda: vector.DeleteIndex(pb.DeleteIndexRequest(name=name)), grpc.StatusCode.NOT_FOUND, name)


def test_create_twice_is_already_exists(vector, index: str) -> None:
    again = pb.CreateIndexRequest(name=index, dimensions=4, metric=pb.METRIC_COSINE)
    rpc_error(lambda: vector.CreateIndex(again), grpc.StatusCode.ALREADY_EXISTS, index)


def test_upsert_then_query_sees_it_at_once(vector, index: str) -> None:
    reply = vector.UpsertVectors(
        pb.UpsertVectorsRequest(
            index_name=index,
            vectors=[vec("a", [1, 0, 0, 0], {"document_id": "d1"}), vec("b", [0, 1, 0, 0], {"document_id": "d2"})],
        )
    )
    assert reply.upserted_count == 2 and reply.mutation_id > 0
    info = vector.GetIndex(pb.GetIndexRequest(name=index)).index
    assert info.vector_count == 2 and info.last_mutation_id == reply.mutation_id
    result = vector.Query(
        pb.QueryRequest(index_name=index, vector=[1, 0.1, 0, 0], top_k=2, return_metadata=True, return_values=True)
    )
    assert [m.id for m in result.matches] == ["a", "b"]
    assert result.matches[0].score == pytest.approx(0.995037, abs=1e-4)
    assert as_dict(result.matches[0].metadata) == {"document_id": "d1"}
    assert list(result.matches[0].values) == [1, 0, 0, 0]


def test_mutation_ids_grow(vector, index: str) -> None:
    ids = []
    for i in range(3):
        ids.append(
            vector.UpsertVectors(
                pb.UpsertVectorsRequest(index_name=index, vectors=[vec(f"v{i}", [1, i, 0, 0])])
            ).mutation_id
        )
    ids.append(vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, ids=["v0"])).mutation_id)
    assert ids == sorted(ids) and len(set(ids)) == 4


def test_upsert_replaces_values_and_metadata(vector, index: str) -> None:
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0], {"v": 1})]))
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [0, 0, 1, 0], {"v": 2})]))
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["a"])).vectors
    assert len(got) == 1 and list(got[0].values) == [0, 0, 1, 0] and as_dict(got[0].metadata) == {"v": 2}
    assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 1
    top = vector.Query(pb.QueryRequest(index_name=index, vector=[0, 0, 1, 0], top_k=5)).matches
    assert [(m.id, round(m.score, 4)) for m in top] == [("a", 1.0)]


def test_filtered_query_returns_k_whenever_k_match(vector, index: str) -> None:
    # 40 decoys sit nearer the query than the 3 matching vectors: a post-filtered top-k would miss them.
    decoys = [vec(f"near{i}", [1, 0.01 * i, 0, 0], {"document_id": "other"}) for i in range(40)]
    wanted = [vec(f"far{i}", [0, 1, 0.01 * i, 0], {"document_id": "doc-7"}) for i in range(3)]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=decoys + wanted))
    result = vector.Query(
        pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=5, filter=struct({"document_id": "doc-7"}))
    )
    assert sorted(m.id for m in result.matches) == ["far0", "far1", "far2"]


def test_namespace_restricts_query_and_unknown_namespace_is_not_found(vector, index: str) -> None:
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(
            index_name=index,
            vectors=[vec("a", [1, 0, 0, 0], namespace="n1"), vec("a", [0.9, 0.1, 0, 0], namespace="n2")],
        )
    )
    assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 2
    only = vector.Query(pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=10, namespace="n2")).matches
    assert [(m.id, m.namespace) for m in only] == [("a", "n2")]
    both = vector.Query(pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=10)).matches
    assert [(m.id, m.namespace) for m in both] == [("a", "n1"), ("a", "n2")]
    rpc_error(
        lambda: vector.Query(pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=1, namespace="nope")),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    )
    request = pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=1, namespace="n2", filter=struct({"x": 1}))
    assert not vector.Query(request).matches  # a namespace that exists, with nothing matching: empty, not NOT_FOUND
    request.namespace = "nope"
    rpc_error(lambda: vector.Query(request), grpc.StatusCode.NOT_FOUND, "nope")


def test_get_vectors_by_ids_keeps_request_order_and_skips_missing(vector, index: str) -> None:
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(index_name=index, vectors=[vec("a", [1, 0, 0, 0]), vec("b", [0, 1, 0, 0])])
    )
    got = vector.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["b", "missing", "a"])).vectors
    assert [v.id for v in got] == ["b", "a"]


def test_delete_by_ids_and_by_filter(vector, index: str) -> None:
    vectors = [vec(f"c{i}", [1, i, 0, 0], {"document_id": "d1" if i < 3 else "d2"}) for i in range(5)]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=vectors))
    gone = vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, filter=struct({"document_id": "d1"})))
    assert gone.deleted_count == 3
    left = vector.Query(pb.QueryRequest(index_name=index, vector=[1, 0, 0, 0], top_k=10)).matches
    assert sorted(m.id for m in left) == ["c3", "c4"]
    by_id = vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, ids=["c3", "never-there"]))
    assert by_id.deleted_count == 1 and by_id.mutation_id > gone.mutation_id
    assert vector.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == 1


def test_list_vectors_pages_in_namespace_then_id_order(vector, index: str) -> None:
    vectors = [vec(f"id{i:02d}", [1, i, 0, 0], {"i": i}, namespace="b" if i % 2 else "a") for i in range(25)]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=vectors))
    seen: list[tuple[str, str]] = []
    token = ""
    while True:
        page = vector.ListVectors(
            pb.ListVectorsRequest(index_name=index, page_size=7, page_token=token, return_metadata=True)
        )
        assert len(page.vectors) <= 7
        seen += [(v.namespace, v.id) for v in page.vectors]
        assert all(not v.values for v in page.vectors)
        token = page.next_page_token
        if not token:
            break
    assert seen == sorted((v.namespace, v.id) for v in vectors)
    only_b = vector.ListVectors(pb.ListVectorsRequest(index_name=index, namespace="b", page_size=100)).vectors
    assert [v.id for v in only_b] == sorted(f"id{i:02d}" for i in range(25) if i % 2)


# Namespaces and ids where one is a prefix of another, and characters beyond ASCII: the byte
# order the contract promises, which a key made of the two parts side by side can get wrong.
_TANGLED_NAMESPACES = ["", "a", "a0", "ab", "a.", "b", "é", "😀"]
_TANGLED_IDS = ["x", "x0", "xa", "x.", "y", "ü", "😀"]


@pytest.mark.parametrize("page_size", [1, 4, 1000])
def test_list_vectors_follows_utf8_byte_order_across_namespaces(vector, index: str, page_size: int) -> None:
    keys = [(ns, vid) for ns in _TANGLED_NAMESPACES for vid in _TANGLED_IDS]
    vectors = [vec(vid, [1, i, 0, 0], {"even": i % 2 == 0}, namespace=ns) for i, (ns, vid) in enumerate(keys)]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=vectors))
    by_bytes = sorted(keys, key=lambda key: (key[0].encode(), key[1].encode()))
    assert list_keys(vector, pb.ListVectorsRequest(index_name=index, page_size=page_size)) == by_bytes
    evens = {key for i, key in enumerate(keys) if i % 2 == 0}
    request = pb.ListVectorsRequest(index_name=index, page_size=page_size, filter=struct({"even": True}))
    assert list_keys(vector, request) == [key for key in by_bytes if key in evens]
    request = pb.ListVectorsRequest(index_name=index, namespace="a", page_size=page_size)
    assert list_keys(vector, request) == [key for key in by_bytes if key[0] == "a"]


def test_list_token_survives_writes(vector, index: str) -> None:
    vector.UpsertVectors(
        pb.UpsertVectorsRequest(index_name=index, vectors=[vec(f"k{i}", [1, i, 0, 0]) for i in range(0, 10, 2)])
    )
    first = vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_size=2))
    assert [v.id for v in first.vectors] == ["k0", "k2"]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("k1", [1, 1, 1, 0])]))
    vector.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, ids=["k2", "k4"]))
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=[vec("k5", [1, 5, 1, 0])]))
    rest = vector.ListVectors(pb.ListVectorsRequest(index_name=index, page_size=100, page_token=first.next_page_token))
    assert [v.id for v in rest.vectors] == ["k5", "k6", "k8"]


def test_list_vectors_pages_within_a_namespace_and_filter(vector, index: str) -> None:
    vectors = [vec(f"id{i:02d}", [1, i, 0, 0], {"even": i % 2 == 0}, namespace=f"n{i % 3}") for i in range(60)]
    vector.UpsertVectors(pb.UpsertVectorsRequest(index_name=index, vectors=vectors))
    for where, expected in (
        (None, sorted(f"id{i:02d}" for i in range(60) if i % 3 == 1)),
        ({"even": True}, sorted(f"id{i:02d}" for i in range(60) if i % 3 == 1 and i % 2 == 0)),
        ({"$and": [{"even": True}, {"$not": {"even": True}}]}, []),
    ):
        seen: list[str] = []
        token = ""
        while True:
            request = pb.ListVectorsRequest(index_name=index, namespace="n1", page_size=3, page_token=token)
            if where is not None:
                request.filter.CopyFrom(struct(where))
            page = vector.ListVectors(request)
            assert all(v.namespace == "n1" for v in page.vectors)
            seen += [v.id for v in page.vectors]
            token = page.next_page_token
            if not token:
                break
        assert seen == expected, where
