"""SQLite backend specifics: files, WAL, locks, parallel readers, the authorizer, time limits."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, batch, error_info, expect_error, query, rows
from tests.metadata.helpers import metadata_stub, sqlite_path

SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT count(*) FROM c"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def stub(data_dir: Path) -> Iterator[Stub]:
    with metadata_stub(data_dir=data_dir, busy_timeout_seconds=0.3, statement_timeout_seconds=5.0) as stub:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name="main"))
        yield stub


def test_one_wal_file_per_database_under_the_data_dir(stub: Stub, data_dir: Path) -> None:
    query(stub, "main", "CREATE TABLE t (x BIGINT)")
    path = sqlite_path(data_dir, "main")
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT name FROM sqlite_schema").fetchall() == [("t",)]
    stub.DeleteDatabase(pb.DeleteDatabaseRequest(name="main"))
    assert list((data_dir / "metadata").iterdir()) == []


def test_a_database_that_stays_locked_is_unavailable_and_unchanged(stub: Stub, data_dir: Path) -> None:
    query(stub, "main", "CREATE TABLE t (x BIGINT)")
    other = sqlite3.connect(sqlite_path(data_dir, "main"), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO t VALUES (99)")
        error = expect_error(grpc.StatusCode.UNAVAILABLE, query, stub, "main", "INSERT INTO t VALUES (1)")
        assert error_info(error).reason == "DATABASE_LOCKED"
        expect_error(grpc.StatusCode.UNAVAILABLE, batch, stub, "main", ["INSERT INTO t VALUES (2)"])
        # WAL readers are not blocked by the writer.
        assert rows(query(stub, "main", "SELECT count(*) FROM t")) == [(0,)]
    finally:
        other.execute("ROLLBACK")
        other.close()
    query(stub, "main", "INSERT INTO t VALUES (3)")
    assert rows(query(stub, "main", "SELECT x FROM t")) == [(3,)]


def test_reads_run_in_parallel_with_a_slow_read_and_writes_still_commit(stub: Stub) -> None:
    query(stub, "main", "CREATE TABLE t (x BIGINT)")
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(query, stub, "main", SLOW.replace("100000000", "3000000"))
        started = time.monotonic()
        # Wait until the slow statement is really running on a reader (it takes well over a second).
        while not slow.done() and time.monotonic() - started < 0.2:
            time.sleep(0.01)
        assert not slow.done(), "the slow query finished too fast to prove anything"
        assert rows(query(stub, "main", "SELECT 42")) == [(42,)]
        query(stub, "main", "INSERT INTO t VALUES (1)")
        assert rows(query(stub, "main", "SELECT count(*) FROM t")) == [(1,)]
        assert not slow.done(), "fast calls waited behind the slow read"
        assert rows(slow.result(timeout=30)) == [(3000000,)]


@pytest.mark.parametrize(
    "sql",
    [
        "PRAGMA journal_mode=DELETE",
        "PRAGMA writable_schema=1",
        "PRAGMA foreign_keys=OFF",
        "PRAGMA user_version=5",
        "CREATE TEMP TABLE x (a BIGINT)",
        "VACUUM",
        "VACUUM INTO '/tmp/strata-stolen.db'",
        "ATTACH DATABASE ':memory:' AS m",
    ],
)
def test_the_authorizer_refuses_what_could_escape_the_database(stub: Stub, sql: str) -> None:
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, "main", sql)
    assert error_info(error).reason == "FORBIDDEN_STATEMENT"
    assert not Path("/tmp/strata-stolen.db").exists()
    assert rows(query(stub, "main", "PRAGMA journal_mode")) == [("wal",)]
    assert rows(query(stub, "main", "PRAGMA foreign_keys")) == [(1,)]


def test_attach_cannot_reach_another_database(stub: Stub, data_dir: Path) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="secret"))
    target = str(sqlite_path(data_dir, "secret"))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, "main", "ATTACH DATABASE ? AS s", target)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, batch, stub, "main", [("ATTACH ? AS s", (target,))])


def test_introspection_pragmas_are_allowed(stub: Stub) -> None:
    query(stub, "main", "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    assert [r[1] for r in rows(query(stub, "main", "PRAGMA table_info(t)"))] == ["id", "x"]
    assert rows(query(stub, "main", "SELECT name FROM pragma_table_info('t') ORDER BY cid")) == [("id",), ("x",)]


def test_time_limit_in_a_batch_names_the_statement_and_rolls_back(data_dir: Path) -> None:
    with metadata_stub(data_dir=data_dir, statement_timeout_seconds=0.3) as stub:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name="main"))
        query(stub, "main", "CREATE TABLE t (x BIGINT)")
        started = time.monotonic()
        error = expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, batch, stub, "main", ["INSERT INTO t VALUES (1)", SLOW])
        assert time.monotonic() - started < 5
        assert error_info(error).metadata["statement_index"] == "1"
        assert rows(query(stub, "main", "SELECT count(*) FROM t")) == [(0,)]


def test_import_accepts_a_dump_from_python_sqlite3(stub: Stub, tmp_path: Path) -> None:
    source = sqlite3.connect(tmp_path / "source.db")
    source.executescript(
        """CREATE TABLE a (id INTEGER PRIMARY KEY AUTOINCREMENT, t TEXT, b BLOB);
           CREATE TABLE b (id INTEGER PRIMARY KEY, a_id INTEGER REFERENCES a (id));
           INSERT INTO a (t, b) VALUES ('x;y', x'00ff'), ('it''s', NULL);
           INSERT INTO b VALUES (1, 2);
           CREATE INDEX b_a ON b (a_id);
           CREATE TRIGGER a_t AFTER INSERT ON a BEGIN UPDATE a SET t = upper(t) WHERE id = new.id; END;
           CREATE VIEW v AS SELECT t FROM a;"""
    )
    # The sqlite3 shell writes this first line; Python's iterdump does not.
    dump = ("PRAGMA foreign_keys=OFF;\n" + "\n".join(source.iterdump())).encode()
    source.close()
    stub.Import(iter([pb.ImportRequest(database="main", data=dump)]))
    assert rows(query(stub, "main", "SELECT id, t, b FROM a ORDER BY id")) == [
        (1, "x;y", b"\x00\xff"),
        (2, "it's", None),
    ]
    query(stub, "main", "INSERT INTO a (t) VALUES ('new')")
    assert rows(query(stub, "main", "SELECT id, t FROM a WHERE t = 'NEW'")) == [(3, "NEW")]
    assert rows(query(stub, "main", "SELECT count(*) FROM v")) == [(3,)]


def test_export_is_a_consistent_snapshot_while_writes_continue(stub: Stub) -> None:
    query(stub, "main", "CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)")
    batch(stub, "main", [("INSERT INTO t (pad) VALUES (?)", ("x" * 200,)) for _ in range(3000)])
    stream = stub.Export(pb.ExportRequest(database="main"))
    first = next(stream)
    query(stub, "main", "DELETE FROM t")
    dump = first.data + b"".join(m.data for m in stream)
    assert dump.count(b"INSERT INTO") == 3000


def test_concurrent_writers_all_commit(data_dir: Path) -> None:
    # Default busy timeout: writers queue for the one writer connection; none should give up.
    with metadata_stub(data_dir=data_dir) as stub:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name="main"))
        _write_concurrently(stub)


def _write_concurrently(stub: Stub) -> None:
    query(stub, "main", "CREATE TABLE t (id INTEGER PRIMARY KEY, w BIGINT)")
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(20):
                batch(stub, "main", [("INSERT INTO t (w) VALUES (?)", (worker,)), ("SELECT ?", (i,))])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert rows(query(stub, "main", "SELECT w, count(*) FROM t GROUP BY w ORDER BY w")) == [(w, 20) for w in range(8)]


def test_concurrent_deletes_one_wins_the_other_is_not_found(stub: Stub) -> None:
    query(stub, "main", "SELECT 1")  # open it, so both deletes find the open database

    def delete() -> grpc.StatusCode:
        try:
            stub.DeleteDatabase(pb.DeleteDatabaseRequest(name="main"), timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(4) as pool:
        codes = sorted(c.name for c in pool.map(lambda _: delete(), range(4)))
    assert codes == ["NOT_FOUND", "NOT_FOUND", "NOT_FOUND", "OK"]


def test_dump_round_trips_fts5_generated_columns_and_autoincrement(stub: Stub) -> None:
    stub.CreateDatabase(pb.CreateDatabaseRequest(name="copy"))
    for sql in (
        "CREATE VIRTUAL TABLE docs USING fts5(title, body)",
        "CREATE TABLE n (id INTEGER PRIMARY KEY AUTOINCREMENT, x REAL, twice REAL GENERATED ALWAYS AS (x * 2))",
        "INSERT INTO docs (title, body) VALUES ('a', 'hello world'), ('b', 'goodbye moon')",
        "INSERT INTO n (x) VALUES (0.1), (1e300), (-2.5)",
        "DELETE FROM n WHERE id = 3",
    ):
        query(stub, "main", sql)
    dump = b"".join(m.data for m in stub.Export(pb.ExportRequest(database="main")))
    stub.Import(iter([pb.ImportRequest(database="copy", data=dump)]))
    assert rows(query(stub, "copy", "SELECT title FROM docs WHERE docs MATCH ?", "moon")) == [("b",)]
    assert rows(query(stub, "copy", "SELECT id, x, twice FROM n")) == [(1, 0.1, 0.2), (2, 1e300, 2e300)]
    # AUTOINCREMENT never reuses id 3, in the copy too.
    assert query(stub, "copy", "INSERT INTO n (x) VALUES (1)").meta.last_row_id == 4


def test_a_caller_deadline_shorter_than_the_limit_frees_the_writer_early(stub: Stub) -> None:
    # The server's statement limit is 5 s; the caller gives up after 0.5 s.
    query(stub, "main", "CREATE TABLE t (x BIGINT)")
    request = pb.BatchRequest(
        database="main", statements=[pb.Statement(sql="INSERT INTO t VALUES (1)"), pb.Statement(sql=SLOW)]
    )
    expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, stub.Batch, request, timeout=0.5)
    started = time.monotonic()
    # With busy_timeout 0.3 s this write would be UNAVAILABLE if the abandoned batch still held the writer.
    while True:
        try:
            query(stub, "main", "INSERT INTO t VALUES (2)")
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 2, "the abandoned batch kept the writer past the caller's deadline"
    assert rows(query(stub, "main", "SELECT x FROM t")) == [(2,)]


def _open_database_files(data_dir: Path) -> set[str]:
    found = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(data_dir)) and target.endswith(".sqlite3"):
            found.add(Path(target).name)
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_least_recently_used_idle_databases_are_closed_beyond_the_limit(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with metadata_stub(data_dir=data_dir, sqlite_open_databases=2) as stub:
        names = [f"db{i}" for i in range(6)]
        for name in names:
            stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
            query(stub, name, "CREATE TABLE t (x TEXT)")
            query(stub, name, "INSERT INTO t VALUES (?)", name)
        for _ in range(2):
            for name in names:
                assert rows(query(stub, name, "SELECT x FROM t")) == [(name,)]
        deadline = time.monotonic() + 10
        while len(open_files := _open_database_files(data_dir)) > 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(open_files) <= 2, open_files


def test_an_import_over_the_size_limit_is_resource_exhausted_and_applies_nothing(tmp_path: Path) -> None:
    with metadata_stub(data_dir=tmp_path, max_import_bytes=1024) as stub:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name="main"))
        pieces = [pb.ImportRequest(database="main", data=b"CREATE TABLE t (x TEXT);\n")]
        pieces += [pb.ImportRequest(data=b"INSERT INTO t VALUES ('" + b"x" * 500 + b"');\n") for _ in range(3)]
        error = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, stub.Import, iter(pieces))
        assert error_info(error).reason == "IMPORT_TOO_LARGE"
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, "main", "SELECT * FROM t")
