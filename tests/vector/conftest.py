"""Fixtures for FAISS-backend tests: a server on a data dir that tests can restart."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.vector.config import VectorSettings
from services.vector.server import create_server
from strata.vector.v1 import vector_pb2_grpc
from tests.contract.vector.milvus_server import milvus_lite
from tests.support.backends import missing_backend
from tests.support.servers import serve_in_thread


@pytest.fixture
def open_vector(tmp_path: Path) -> Callable[..., Any]:
    """`with open_vector(**settings) as stub:` runs a FAISS server (on tmp_path unless data_dir is given)."""

    @contextlib.contextmanager
    def run(**overrides: Any) -> Iterator[vector_pb2_grpc.VectorServiceStub]:
        settings = VectorSettings(**{"data_dir": tmp_path, **overrides})
        with (
            serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address,
            grpc.insecure_channel(address) as channel,
        ):
            yield vector_pb2_grpc.VectorServiceStub(channel)

    return run


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with milvus_lite(tmp_path_factory.mktemp("milvus-vector")) as uri:
            yield uri
    except (FileNotFoundError, RuntimeError) as exc:
        missing_backend(f"Milvus Lite unavailable: {exc}")
