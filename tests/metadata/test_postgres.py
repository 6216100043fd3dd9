"""PostgreSQL backend specifics: a schema per database, quoting, locks, dumps with sequences and views."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.metadata.backends.postgres import schema_for
from services.metadata.config import MetadataSettings
from services.metadata.server import create_server
from services.runtime.settings import ConfigError
from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc
from tests.contract.metadata.client import Stub, batch, error_info, expect_error, query, rows
from tests.metadata.helpers import metadata_stub
from tests.metadata.postgres_server import PostgresUnavailable, shared_postgres
from tests.support.backends import missing_backend
from tests.support.servers import free_port, serve_in_thread


@pytest.fixture(scope="module")
def dsn() -> str:
    try:
        return shared_postgres().new_database("backend_tests")
    except PostgresUnavailable as exc:
        missing_backend(str(exc))
        raise


@pytest.fixture
def stub(dsn: str, tmp_path: Path) -> Iterator[Stub]:
    with metadata_stub(data_dir=tmp_path, backend="postgres", postgres_dsn=dsn) as stub:
        for database in stub.ListDatabases(pb.ListDatabasesRequest(page_size=1000)).databases:
            stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=database.name))
        yield stub


def test_each_database_is_a_schema_listed_in_the_catalog(stub: Stub, dsn: str) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="Mixed-Case_1"))
    created = stub.ListDatabases(pb.ListDatabasesRequest()).databases[0]
    assert created.name == "Mixed-Case_1"
    assert created.create_time.seconds > 0
    query(stub, "Mixed-Case_1", "CREATE TABLE t (x BIGINT)")
    with psycopg.connect(dsn) as conn:
        found = conn.execute("SELECT table_schema FROM information_schema.tables WHERE table_name = 't'").fetchall()
        assert found == [(schema_for("Mixed-Case_1"),)]
    stub.DeleteDatabase(pb.DeleteDatabaseRequest(name="Mixed-Case_1"))
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema_for("Mixed-Case_1"),)).fetchall()
            == []
        )


def test_databases_do_not_see_each_others_tables(stub: Stub) -> None:
    for name in ("a", "b"):
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
        query(stub, name, "CREATE TABLE t (who TEXT)")
        query(stub, name, "INSERT INTO t VALUES (?)", name)
    assert rows(query(stub, "a", "SELECT who FROM t")) == [("a",)]
    assert rows(query(stub, "b", "SELECT who FROM t")) == [("b",)]


def test_long_names_map_to_distinct_valid_schemas() -> None:
    first, second = "x" * 63 + "1", "x" * 63 + "2"
    assert schema_for(first) != schema_for(second)
    assert max(len(schema_for(first)), len(schema_for(second))) <= 63


def test_dollar_quoted_functions_and_escape_strings(stub: Stub) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="q"))
    query(stub, "q", "CREATE FUNCTION twice(x bigint) RETURNS bigint AS $$ SELECT x * 2; $$ LANGUAGE sql")
    assert rows(query(stub, "q", "SELECT twice(?), $q$ ?; $q$, E'\\' ?'", 21)) == [(42, " ?; ", "' ?")]


def test_session_commands_are_refused(stub: Stub) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="s"))
    for sql in ("SET statement_timeout = 0", "RESET ALL", "SET search_path TO public", "COPY (SELECT 1) TO STDOUT"):
        error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, "s", sql)
        assert error_info(error).reason in ("FORBIDDEN_STATEMENT", "TRANSACTION_CONTROL")


def test_a_lock_held_elsewhere_is_unavailable(stub: Stub, dsn: str, tmp_path: Path) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="locked"))
    query(stub, "locked", "CREATE TABLE t (x BIGINT)")
    with (
        psycopg.connect(dsn) as holder,
        metadata_stub(data_dir=tmp_path, backend="postgres", postgres_dsn=dsn, busy_timeout_seconds=0.3) as impatient,
    ):
        holder.execute(f'LOCK TABLE "{schema_for("locked")}".t IN ACCESS EXCLUSIVE MODE')
        error = expect_error(grpc.StatusCode.UNAVAILABLE, query, impatient, "locked", "INSERT INTO t VALUES (1)")
        assert error_info(error).reason == "DATABASE_LOCKED"
        holder.rollback()
    query(stub, "locked", "INSERT INTO t VALUES (1)")


def test_dump_keeps_sequences_identity_generated_columns_and_views(stub: Stub) -> None:
    for name in ("src", "dst"):
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
    for sql in (
        "CREATE TABLE a (id BIGSERIAL PRIMARY KEY, name TEXT NOT NULL DEFAULT 'n', tags TEXT[], doc JSONB)",
        "CREATE TABLE b (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a_id BIGINT REFERENCES a (id),"
        " n BIGINT, twice BIGINT GENERATED ALWAYS AS (n * 2) STORED, at TIMESTAMPTZ)",
        "CREATE UNIQUE INDEX a_name ON a (lower(name))",
        "CREATE VIEW names AS SELECT name FROM a ORDER BY name",
        "INSERT INTO a (name, tags, doc) VALUES ('x', ARRAY['p', 'q'], '{\"k\": [1, 2.5]}'), ('y', NULL, NULL)",
        "INSERT INTO b (a_id, n, at) VALUES (1, 5, '2024-02-29T12:00:00Z'), (2, 7, NULL)",
    ):
        query(stub, "src", sql)
    dump = b"".join(m.data for m in stub.Export(pb.ExportRequest(database="src")))
    stub.Import(iter([pb.ImportRequest(database="dst", data=dump)]))
    for sql in (
        "SELECT id, name, tags, doc FROM a ORDER BY id",
        "SELECT id, a_id, n, twice, at FROM b ORDER BY id",
        "SELECT name FROM names",
    ):
        assert rows(query(stub, "dst", sql)) == rows(query(stub, "src", sql))
    # Sequences continue where they were; constraints and the expression index came along.
    assert rows(query(stub, "dst", "INSERT INTO a (name) VALUES ('z') RETURNING id")) == [(3,)]
    assert rows(query(stub, "dst", "INSERT INTO b (n) VALUES (1) RETURNING id, twice")) == [(3, 2)]
    expect_error(grpc.StatusCode.ALREADY_EXISTS, query, stub, "dst", "INSERT INTO a (name) VALUES ('X')")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, query, stub, "dst", "INSERT INTO b (a_id) VALUES (99)")


def test_concurrent_calls_share_the_pool(stub: Stub) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="pool"))
    query(stub, "pool", "CREATE TABLE t (w BIGINT)")
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for _ in range(10):
                query(stub, "pool", "INSERT INTO t VALUES (?)", worker)
                query(stub, "pool", "SELECT count(*) FROM t", read_only=True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert rows(query(stub, "pool", "SELECT count(*) FROM t")) == [(120,)]


def test_postgres_backend_needs_a_dsn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="STRATA_METADATA_POSTGRES_DSN"):
        create_server("127.0.0.1:0", MetadataSettings(data_dir=tmp_path, backend="postgres"))


def test_unreachable_postgres_serves_not_serving_and_unavailable(tmp_path: Path) -> None:
    dsn = f"postgresql://nobody@127.0.0.1:{free_port()}/none?connect_timeout=1"
    settings = MetadataSettings(data_dir=tmp_path, backend="postgres", postgres_dsn=dsn, busy_timeout_seconds=0.5)
    with (
        serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = metadata_pb2_grpc.MetadataServiceStub(channel)
        expect_error(grpc.StatusCode.UNAVAILABLE, stub.ListDatabases, pb.ListDatabasesRequest())
        expect_error(grpc.StatusCode.UNAVAILABLE, query, stub, "any", "SELECT 1")


def test_a_pipelined_batch_names_the_failing_statement(stub: Stub, dsn: str, tmp_path: Path) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="pipe"))
    query(stub, "pipe", "CREATE TABLE t (id BIGINT PRIMARY KEY, x TEXT)")
    # A value PostgreSQL refuses before the server sees it (NUL in text), after two good statements.
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        batch,
        stub,
        "pipe",
        [("INSERT INTO t VALUES (?, ?)", (1, "a")), "SELECT 1 AS one", ("INSERT INTO t VALUES (?, ?)", (2, "a\x00b"))],
    )
    assert error_info(error).metadata["statement_index"] == "2"
    slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c"
    with metadata_stub(data_dir=tmp_path, backend="postgres", postgres_dsn=dsn, statement_timeout_seconds=0.3) as quick:
        error = expect_error(
            grpc.StatusCode.DEADLINE_EXCEEDED, batch, quick, "pipe", [("INSERT INTO t VALUES (?, ?)", (3, "c")), slow]
        )
        assert error_info(error).metadata["statement_index"] == "1"
    assert rows(query(stub, "pipe", "SELECT count(*) FROM t")) == [(0,)]
