"""Congruence: the same workload against two servers gives the same answers.

Our FAISS server is the reference; the subject is our Milvus server, or the server at
STRATA_CONFORMANCE_ADDR when certifying another implementation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from services.vector.config import VectorSettings
from services.vector.server import create_server
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.contract.vector.conftest import CONFORMANCE_ADDR
from tests.contract.vector.helpers import as_dict, list_keys, struct, vec
from tests.support.servers import serve_in_thread

pb = vector_pb2
DIMS = 24
N = 600

FILTERS: list[dict[str, Any] | None] = [
    None,
    {"topic": "t3"},
    {"topic": {"$in": ["t1", "t2"]}, "rank": {"$lt": 300}},
    {"$or": [{"rank": {"$gte": 550}}, {"tags.lang": "fr"}]},
    {"$not": {"topic": {"$nin": ["t0", "t4"]}}},
    {"rank": {"$gt": 100, "$lte": 120}, "$not": {"tags.lang": "en"}},
    {"topic": {"$ne": "t2"}, "flag": True},
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    settings = VectorSettings(data_dir=tmp_path_factory.mktemp("reference"), backend="faiss")
    with (
        serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield vector_pb2_grpc.VectorServiceStub(channel)


@pytest.fixture(scope="module")
def subject(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if CONFORMANCE_ADDR:
        with grpc.insecure_channel(CONFORMANCE_ADDR) as channel:
            yield vector_pb2_grpc.VectorServiceStub(channel)
        return
    uri = request.getfixturevalue("milvus_uri")
    data_dir: Path = tmp_path_factory.mktemp("subject")
    settings = VectorSettings(data_dir=data_dir, backend="milvus", milvus_uri=uri)
    with (
        serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield vector_pb2_grpc.VectorServiceStub(channel)


def _workload(rng: np.random.Generator) -> list[Any]:
    basis = rng.standard_normal((6, DIMS))
    points = rng.standard_normal((N, 6)) @ basis + 0.1 * rng.standard_normal((N, DIMS))
    vectors = []
    for i in range(N):
        metadata = {
            "topic": f"t{i % 5}",
            "rank": i,
            "flag": i % 3 == 0,
            "tags": {"lang": ["en", "fr", "de"][i % 3]},
        }
        vectors.append(vec(f"doc{i:04d}", points[i].astype(np.float32).tolist(), metadata, namespace=f"ns{i % 2}"))
    return vectors


@pytest.mark.parametrize("metric", [pb.METRIC_COSINE, pb.METRIC_EUCLIDEAN, pb.METRIC_DOT_PRODUCT])
def test_backends_agree(reference: Any, subject: Any, metric: int) -> None:
    rng = np.random.default_rng(metric)
    name = f"congruence-{uuid.uuid4().hex[:8]}"
    vectors = _workload(rng)
    queries = rng.standard_normal((8, DIMS)).astype(np.float32)
    stubs = {"reference": reference, "subject": subject}
    try:
        for stub in stubs.values():
            stub.CreateIndex(pb.CreateIndexRequest(name=name, dimensions=DIMS, metric=metric))
            for start in range(0, N, 200):
                stub.UpsertVectors(pb.UpsertVectorsRequest(index_name=name, vectors=vectors[start : start + 200]))
            # The same mixed writes on both: replacements, inserts that skip, deletes by id and filter.
            stub.UpsertVectors(
                pb.UpsertVectorsRequest(
                    index_name=name, vectors=[vec("doc0001", [0.5] * DIMS, {"topic": "t3", "rank": 1})]
                )
            )
            stub.InsertVectors(pb.InsertVectorsRequest(index_name=name, vectors=vectors[:5]))
            stub.DeleteVectors(pb.DeleteVectorsRequest(index_name=name, ids=["doc0010", "doc0011"]))
            stub.DeleteVectors(pb.DeleteVectorsRequest(index_name=name, filter=struct({"rank": {"$gte": 590}})))

        def answers(stub: Any) -> dict[str, Any]:
            out: dict[str, Any] = {}
            info = stub.GetIndex(pb.GetIndexRequest(name=name)).index
            out["count"] = info.vector_count
            for f, where in enumerate(FILTERS):
                for q, query in enumerate(queries):
                    for namespace in ("", "ns1"):
                        request = pb.QueryRequest(
                            index_name=name, vector=query.tolist(), top_k=10, namespace=namespace, return_metadata=True
                        )
                        if where is not None:
                            request.filter.CopyFrom(struct(where))
                        matches = stub.Query(request).matches
                        out[f"query {f} {q} {namespace}"] = [(m.namespace, m.id, as_dict(m.metadata)) for m in matches]
                        out[f"scores {f} {q} {namespace}"] = [m.score for m in matches]
                if where is not None:
                    got = stub.GetVectors(pb.GetVectorsRequest(index_name=name, filter=struct(where))).vectors
                    out[f"get {f}"] = [(v.namespace, v.id, list(v.values)) for v in got]
            out["list"] = list_keys(stub, pb.ListVectorsRequest(index_name=name, page_size=97))
            return out

        expected, actual = answers(reference), answers(subject)
        assert expected.keys() == actual.keys()
        for key in expected:
            if key.startswith("scores"):
                assert actual[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-4), key
            else:
                assert actual[key] == expected[key], key
    finally:
        for stub in stubs.values():
            try:
                stub.DeleteIndex(pb.DeleteIndexRequest(name=name))
            except grpc.RpcError:
                pass
