"""Runs the vector contract suite against every backend of our server, or against any server.

Set STRATA_CONFORMANCE_ADDR=host:port to certify another implementation: the suite then
runs only against that address. (Read at import time: tests/conftest.py clears STRATA_*
variables for each test.)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from services.vector.config import VectorSettings
from services.vector.server import create_server
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.contract.vector.milvus_server import milvus_lite
from tests.support.backends import missing_backend
from tests.support.servers import serve_in_thread

CONFORMANCE_ADDR = os.environ.get("STRATA_CONFORMANCE_ADDR", "")
BACKENDS = ["external"] if CONFORMANCE_ADDR else ["faiss", "milvus"]


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with milvus_lite(tmp_path_factory.mktemp("milvus")) as uri:
            yield uri
    except (FileNotFoundError, RuntimeError) as exc:
        missing_backend(f"Milvus Lite unavailable: {exc}")


def _serve(settings: VectorSettings) -> Callable[[], object]:
    return lambda: create_server("127.0.0.1:0", settings)


@pytest.fixture(scope="session", params=BACKENDS)
def vector_address(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    backend = request.param
    if backend == "external":
        yield CONFORMANCE_ADDR
        return
    data_dir: Path = tmp_path_factory.mktemp(f"vector-{backend}")
    if backend == "milvus":
        uri = request.getfixturevalue("milvus_uri")
        settings = VectorSettings(data_dir=data_dir, backend="milvus", milvus_uri=uri)
    else:
        settings = VectorSettings(data_dir=data_dir, backend="faiss")
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        yield address


@pytest.fixture(scope="session")
def vector(vector_address: str) -> Iterator[vector_pb2_grpc.VectorServiceStub]:
    with grpc.insecure_channel(vector_address) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        yield vector_pb2_grpc.VectorServiceStub(channel)


@pytest.fixture
def make_index(vector: vector_pb2_grpc.VectorServiceStub) -> Iterator[Callable[..., str]]:
    """Create uniquely named indexes for one test and delete them afterwards."""
    created: list[str] = []

    def make(dimensions: int = 4, metric: int = vector_pb2.METRIC_COSINE, **kwargs: object) -> str:
        name = f"t-{uuid.uuid4().hex[:12]}"
        vector.CreateIndex(vector_pb2.CreateIndexRequest(name=name, dimensions=dimensions, metric=metric, **kwargs))
        created.append(name)
        return name

    yield make
    for name in created:
        try:
            vector.DeleteIndex(vector_pb2.DeleteIndexRequest(name=name))
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise


@pytest.fixture
def index(make_index: Callable[..., str]) -> str:
    """A fresh 4-dimensional cosine index."""
    return make_index()
