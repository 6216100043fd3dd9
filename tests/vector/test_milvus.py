"""Milvus backend specifics: state lives in Milvus, so a restarted server picks it up; a
Milvus that stops answering gives UNAVAILABLE, not INTERNAL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import as_dict, rpc_error, struct, vec
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
