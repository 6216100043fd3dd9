"""Milvus backend specifics: state lives in Milvus, so a restarted server picks it up; a
Milvus that stops answering gives UNAVAILABLE, not INTERNAL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymilvus import MilvusClient

from services.vector.backends import milvus
from services.vector.backends.milvus import collection_name
from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import as_dict, list_keys, rpc_error, struct, vec
from tests.contract.vector.milvus_server import milvus_lite
from tests.support.backends import missing_backend

pb = vector_pb2


def test_restarted_server_keeps_indexes_vectors_and_mutation_ids(
    open_vector: Callable[..., Any], milvus_uri: str
) -> None:
    with open_vector(backend="milvus", milvus_uri=milvus_uri) as stub:
        stub.CreateIndex(
            pb.CreateIndexRequest(
                name="kept-milvus",
                dimensions=3,
                metric=pb.METRIC_DOT_PRODUCT,
                index_type=pb.INDEX_TYPE_HNSW,
                description="survives",
            )
        )
        stub.UpsertVectors(
            pb.UpsertVectorsRequest(index_name="kept-milvus", vectors=[vec("a", [1, 2, 3], {"k": "v"}, "ns")])
        )
        last = stub.DeleteVectors(pb.DeleteVectorsRequest(index_name="kept-milvus", filter=struct({"k": "x"})))
    with open_vector(backend="milvus", milvus_uri=milvus_uri) as stub:
        info = stub.GetIndex(pb.GetIndexRequest(name="kept-milvus")).index
        assert (info.vector_count, info.last_mutation_id, info.description) == (1, last.mutation_id, "survives")
        assert info.index_type == pb.INDEX_TYPE_HNSW and info.hnsw.m > 0
        got = stub.GetVectors(pb.GetVectorsRequest(index_name="kept-milvus", ids=["a"], namespace="ns")).vectors
        assert [(v.id, list(v.values), as_dict(v.metadata)) for v in got] == [("a", [1, 2, 3], {"k": "v"})]
        after = stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="kept-milvus", vectors=[vec("b", [1, 0, 0])]))
        assert after.mutation_id == last.mutation_id + 1
        stub.DeleteIndex(pb.DeleteIndexRequest(name="kept-milvus"))


def test_a_stopped_milvus_is_unavailable(open_vector: Callable[..., Any], tmp_path: Path) -> None:
    try:
        server = milvus_lite(tmp_path / "own-milvus")
        uri = server.__enter__()
    except (FileNotFoundError, RuntimeError) as exc:
        missing_backend(f"Milvus Lite unavailable: {exc}")
    stopped = False
    try:
        with open_vector(backend="milvus", milvus_uri=uri, milvus_timeout_seconds=3) as stub:
            stub.CreateIndex(pb.CreateIndexRequest(name="gone", dimensions=2, metric=pb.METRIC_COSINE))
            server.__exit__(None, None, None)
            stopped = True
            error = rpc_error(
                lambda: stub.Query(pb.QueryRequest(index_name="gone", vector=[1, 0], top_k=1), timeout=60),
                grpc.StatusCode.UNAVAILABLE,
                "milvus",
            )
            assert error.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        if not stopped:
            server.__exit__(None, None, None)


def _stored_pks(uri: str, index: str) -> set[str]:
    client = MilvusClient(uri=uri)
    try:
        rows = client.query(collection_name(index), filter='vid != ""', output_fields=["pk"], limit=1000)
        return {row["pk"] for row in rows}
    finally:
        client.close()


def test_a_collection_with_the_first_key_layout_keeps_working(
    open_vector: Callable[..., Any], milvus_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collections made before primary keys sorted in key order (layout 1) are read and written
    as they are; only new collections get the layout that lists by primary key."""
    keys = [(ns, vid) for ns in ("", "a", "a0", "ab", "é") for vid in ("x", "x0", "xa", "ü")]
    vectors = [vec(vid, [1, i, 0], {"i": i}, namespace=ns) for i, (ns, vid) in enumerate(keys)]
    by_bytes = sorted(keys, key=lambda key: (key[0].encode(), key[1].encode()))
    monkeypatch.setattr(milvus, "PK_LAYOUT", 1)
    with open_vector(backend="milvus", milvus_uri=milvus_uri) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="layout-one", dimensions=3, metric=pb.METRIC_COSINE))
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="layout-one", vectors=vectors[:10]))
    monkeypatch.undo()
    with open_vector(backend="milvus", milvus_uri=milvus_uri) as stub:
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="layout-one", vectors=vectors[10:]))
        stub.CreateIndex(pb.CreateIndexRequest(name="layout-two", dimensions=3, metric=pb.METRIC_COSINE))
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="layout-two", vectors=vectors))
        for index in ("layout-one", "layout-two"):
            assert list_keys(stub, pb.ListVectorsRequest(index_name=index, page_size=3)) == by_bytes, index
            got = stub.GetVectors(pb.GetVectorsRequest(index_name=index, ids=["xa"], namespace="a0")).vectors
            assert [(v.id, as_dict(v.metadata)) for v in got] == [("xa", {"i": keys.index(("a0", "xa"))})]
            inserted = stub.InsertVectors(pb.InsertVectorsRequest(index_name=index, vectors=vectors[:2]))
            assert inserted.inserted_count == 0 and inserted.skipped_count == 2
            gone = stub.DeleteVectors(pb.DeleteVectorsRequest(index_name=index, ids=["x", "x0"], namespace="ab"))
            assert gone.deleted_count == 2
            assert stub.GetIndex(pb.GetIndexRequest(name=index)).index.vector_count == len(keys) - 2
    assert all(":" in pk for pk in _stored_pks(milvus_uri, "layout-one"))
    assert all("." in pk and ":" not in pk for pk in _stored_pks(milvus_uri, "layout-two"))
    with open_vector(backend="milvus", milvus_uri=milvus_uri) as stub:
        for index in ("layout-one", "layout-two"):
            stub.DeleteIndex(pb.DeleteIndexRequest(name=index))


def test_cosine_vectors_whose_norm_milvus_cannot_compute_are_refused(
    open_vector: Callable[..., Any], milvus_uri: str
) -> None:
    """Milvus computes cosine norms in float32, and a vector past that range scored ~0 against
    itself; the backend refuses it, naming it, and writes nothing (FAISS scores it: test_cosine_norms)."""
    with open_vector(backend="milvus", milvus_uri=milvus_uri) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="norms", dimensions=4, metric=pb.METRIC_COSINE))
        for values in ([3e38, -3e38, 1, 0], [1e-30, 0, 0, -1e-30]):
            batch = [vec("fine", [1, 2, 3, 4]), vec("extreme", values)]
            rpc_error(
                lambda batch=batch: stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="norms", vectors=batch)),
                grpc.StatusCode.INVALID_ARGUMENT,
                "'extreme'",
                "float32",
            )
            rpc_error(
                lambda values=values: stub.Query(pb.QueryRequest(index_name="norms", vector=values, top_k=1)),
                grpc.StatusCode.INVALID_ARGUMENT,
                "query",
            )
        assert stub.GetIndex(pb.GetIndexRequest(name="norms")).index.vector_count == 0
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="norms", vectors=[vec("fine", [1e-10, 2e-10, 0, 0])]))
        match = stub.Query(pb.QueryRequest(index_name="norms", vector=[1, 2, 0, 0], top_k=1)).matches[0]
        assert (match.id, round(match.score, 4)) == ("fine", 1.0)
        stub.DeleteIndex(pb.DeleteIndexRequest(name="norms"))
