"""Contract-suite fixtures: the metadata suite runs against our server on every backend,
or only against STRATA_CONFORMANCE_ADDR=host:port when that is set (any implementation
of strata.metadata.v1 can certify itself that way)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from services.metadata.config import MetadataSettings
from services.metadata.server import create_server
from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc
from tests.metadata.postgres_server import PostgresUnavailable, shared_postgres
from tests.support.backends import missing_backend
from tests.support.servers import serve_in_thread

# Read at import: tests/conftest.py clears STRATA_* variables before each test runs.
CONFORMANCE_ADDR = os.environ.get("STRATA_CONFORMANCE_ADDR", "").strip()
BACKENDS = ("sqlite", "postgres")
# Limits our servers run with in this suite, so limit tests finish fast.
MAX_ROWS = 1000
STATEMENT_TIMEOUT = 1.0


@dataclass(frozen=True)
class Target:
    backend: str  # "sqlite", "postgres" or "external"
    address: str

    @property
    def ours(self) -> bool:
        return self.backend != "external"


def suite_settings(backend: str, data_dir: os.PathLike[str] | str, dsn: str = "") -> MetadataSettings:
    from pathlib import Path

    return MetadataSettings(
        data_dir=Path(data_dir),
        backend=backend,
        postgres_dsn=dsn,
        statement_timeout_seconds=STATEMENT_TIMEOUT,
        busy_timeout_seconds=1.0,
        max_rows=MAX_ROWS,
        max_response_bytes=4 * 1024 * 1024,
    )


@pytest.fixture(scope="session")
def sqlite_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = suite_settings("sqlite", tmp_path_factory.mktemp("metadata-sqlite"))
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        yield address


@pytest.fixture(scope="session")
def postgres_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        dsn = shared_postgres().new_database("contract")
    except PostgresUnavailable as exc:
        missing_backend(str(exc))
    settings = suite_settings("postgres", tmp_path_factory.mktemp("metadata-postgres"), dsn)
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        yield address


@pytest.fixture(scope="session", params=("external",) if CONFORMANCE_ADDR else BACKENDS)
def target(request: pytest.FixtureRequest) -> Target:
    if request.param == "external":
        return Target("external", CONFORMANCE_ADDR)
    return Target(request.param, request.getfixturevalue(f"{request.param}_address"))


@pytest.fixture(scope="session")
def stub(target: Target) -> Iterator[metadata_pb2_grpc.MetadataServiceStub]:
    with grpc.insecure_channel(target.address) as channel:
        yield metadata_pb2_grpc.MetadataServiceStub(channel)


def unique_name(prefix: str = "db") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def db(stub: metadata_pb2_grpc.MetadataServiceStub) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = unique_name()
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name), timeout=30)
    yield name
    try:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name), timeout=30)
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
