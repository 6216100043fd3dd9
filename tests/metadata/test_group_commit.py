"""SQLite group commit: concurrent write transactions share one COMMIT, yet each stays all-or-nothing."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.metadata.backends.sqlite import _Connection
from services.metadata.backends.sqlite_commits import GroupCommitter, GroupJob
from services.metadata.config import MetadataSettings
from services.metadata.model import Limits, Statement
from services.runtime.errors import AlreadyExists, DeadlineExceeded, FailedPrecondition
from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, error_info, query, rows
from tests.metadata.helpers import metadata_stub

LIMITS = Limits(statement_timeout=5.0, max_rows=1000, max_response_bytes=1 << 20)
RUNAWAY_INSERT = (
    "INSERT INTO t (id, x) WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 1000000000)"
    " SELECT n + 100, 'slow' FROM c WHERE n % 1000 = 999"
)
SLOW = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT count(*) FROM c"


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[_Connection]:
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT NOT NULL)")
        setup.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        setup.execute(
            "CREATE TABLE child (id INTEGER PRIMARY KEY,"
            " parent INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)"
        )
    conn = _Connection(path, writer=True, settings=MetadataSettings(data_dir=tmp_path))
    yield conn
    conn.close()


def run_group(writer: _Connection, *transactions: list[Statement], limits: Limits = LIMITS) -> list[object]:
    async def main() -> list[object]:
        jobs = [GroupJob(statements, limits, True) for statements in transactions]
        return list(writer.run_group(jobs))

    return asyncio.run(main())


def stored(writer: _Connection, sql: str = "SELECT id, x FROM t ORDER BY id") -> list[tuple[object, ...]]:
    return writer.conn.execute(sql).fetchall()


def insert(i: int, x: str = "v") -> Statement:
    return Statement("INSERT INTO t (id, x) VALUES (?, ?)", (i, x))


def test_a_failing_transaction_rolls_back_alone(writer: _Connection) -> None:
    outcomes = run_group(
        writer,
        [insert(1), insert(2)],
        [insert(3), insert(1, "duplicate")],
        [insert(4)],
    )
    assert [type(o) for o in outcomes[1:]] == [AlreadyExists, list]
    assert isinstance(outcomes[1], AlreadyExists) and outcomes[1].metadata["statement_index"] == "1"
    assert [r.changes for r in outcomes[0]] == [1, 1]  # type: ignore[union-attr,attr-defined]
    assert stored(writer) == [(1, "v"), (2, "v"), (4, "v")]
    assert not writer.conn.in_transaction


def test_a_deferred_violation_fails_only_its_own_transaction(writer: _Connection) -> None:
    # The violation surfaces only at COMMIT, which the group shares: the group falls back to
    # one transaction each, and only the guilty one fails.
    outcomes = run_group(
        writer,
        [insert(1)],
        [Statement("INSERT INTO child (id, parent) VALUES (1, 99)")],
        [Statement("INSERT INTO parent (id) VALUES (7)"), Statement("INSERT INTO child (id, parent) VALUES (2, 7)")],
    )
    assert isinstance(outcomes[0], list) and isinstance(outcomes[2], list)
    assert isinstance(outcomes[1], FailedPrecondition)
    assert stored(writer) == [(1, "v")]
    assert stored(writer, "SELECT id, parent FROM child") == [(2, 7)]


def test_an_interrupted_statement_fails_only_its_own_transaction(writer: _Connection) -> None:
    # SQLite may abandon the whole transaction on an interrupt; the others still commit.
    limits = Limits(statement_timeout=0.2, max_rows=1000, max_response_bytes=1 << 20)
    outcomes = run_group(
        writer,
        [insert(1)],
        [insert(2), Statement(RUNAWAY_INSERT)],
        [insert(3)],
        limits=limits,
    )
    assert isinstance(outcomes[1], DeadlineExceeded)
    assert stored(writer) == [(1, "v"), (3, "v")]


def test_concurrent_batches_over_grpc_each_get_their_own_outcome(tmp_path: Path) -> None:
    with metadata_stub(data_dir=tmp_path / "data", statement_timeout_seconds=10.0) as stub:
        stub.CreateDatabase(pb.CreateDatabaseRequest(name="main"))
        query(stub, "main", "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT NOT NULL)")
        outcomes: dict[int, object] = {}

        def call(i: int, stub: Stub = stub) -> None:
            # Every third call collides with id 0 in its second statement and must change nothing.
            statements = [
                pb.Statement(
                    sql="INSERT INTO t (id, x) VALUES (?, ?)", params=[pb.Value(int_value=i), pb.Value(text_value="a")]
                ),
                pb.Statement(
                    sql="INSERT INTO t (id, x) VALUES (?, ?)",
                    params=[pb.Value(int_value=0 if i % 3 == 0 else i + 1000), pb.Value(text_value="b")],
                ),
            ]
            if i == 1:  # a slow first transaction, so the others queue up behind it and are grouped
                statements.insert(0, pb.Statement(sql=SLOW.format(n=3_000_000)))
            try:
                stub.Batch(pb.BatchRequest(database="main", statements=statements), timeout=30)
                outcomes[i] = "ok"
            except grpc.RpcError as error:
                outcomes[i] = (error.code(), error_info(error).metadata["statement_index"])

        query(stub, "main", "INSERT INTO t (id, x) VALUES (0, 'zero')")
        threads = [threading.Thread(target=call, args=(i,)) for i in range(1, 31)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for i in range(1, 31):
            assert outcomes[i] == ((grpc.StatusCode.ALREADY_EXISTS, "1") if i % 3 == 0 else "ok"), i
        expected = {0} | {i for i in range(1, 31) if i % 3} | {i + 1000 for i in range(1, 31) if i % 3}
        assert {row[0] for row in rows(query(stub, "main", "SELECT id FROM t"))} == expected


def test_a_cancelled_call_still_queued_never_runs(tmp_path: Path) -> None:
    async def main() -> list[object]:
        ran: list[list[GroupJob]] = []
        release = asyncio.Event()

        async def run(jobs: list[GroupJob]) -> list[object]:
            ran.append(jobs)
            await release.wait()  # the first group is still running while the others queue
            return [[] for _ in jobs]

        committer = GroupCommitter(run, 0)  # type: ignore[arg-type]
        first = asyncio.create_task(committer.submit([insert(1)], LIMITS, in_batch=True))
        await asyncio.sleep(0)
        queued = asyncio.create_task(committer.submit([insert(2)], LIMITS, in_batch=True))
        kept = asyncio.create_task(committer.submit([insert(3)], LIMITS, in_batch=True))
        await asyncio.sleep(0)
        queued.cancel()
        await asyncio.sleep(0)
        release.set()
        await first
        await kept
        return [[job.statements[0].params[0] for job in jobs] for jobs in ran]

    assert asyncio.run(main()) == [[1], [3]]
