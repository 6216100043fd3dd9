"""Batch: one transaction, all or nothing, and the failing statement's index."""

from __future__ import annotations

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, batch, error_info, expect_error, py, query, rows


def test_batch_runs_in_order_and_returns_one_result_each(stub: Stub, db: str) -> None:
    results = batch(
        stub,
        db,
        [
            "CREATE TABLE t (id BIGINT PRIMARY KEY, x TEXT)",
            ("INSERT INTO t (id, x) VALUES (?, ?)", (1, "a")),
            ("INSERT INTO t (id, x) VALUES (?, ?)", (2, "b")),
            ("UPDATE t SET x = ? WHERE id = ?", ("c", 2)),
            "SELECT id, x FROM t ORDER BY id",
        ],
    )
    assert len(results) == 5
    assert [r.meta.changes for r in results[1:4]] == [1, 1, 1]
    assert rows(results[4]) == [(1, "a"), (2, "c")]


def test_batch_records(stub: Stub, db: str) -> None:
    request = pb.BatchRequest(database=db, as_records=True, statements=[pb.Statement(sql="SELECT 1 AS one")])
    result = stub.Batch(request).results[0]
    assert {k: py(x) for k, x in result.records[0].fields.items()} == {"one": 1}


@pytest.mark.parametrize(
    ("failing", "code"),
    [
        ("INSERT INTO t (id, x) VALUES (1, 'dup')", grpc.StatusCode.ALREADY_EXISTS),
        ("INSERT INTO t (id, x) VALUES (10, NULL)", grpc.StatusCode.FAILED_PRECONDITION),
        ("INSERT INTO nowhere VALUES (1)", grpc.StatusCode.INVALID_ARGUMENT),
        ("SELECT 1; SELECT 2", grpc.StatusCode.INVALID_ARGUMENT),
        ("COMMIT", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_one_failure_rolls_back_everything_and_names_the_statement(
    stub: Stub, db: str, failing: str, code: grpc.StatusCode
) -> None:
    query(stub, db, "CREATE TABLE t (id BIGINT PRIMARY KEY, x TEXT NOT NULL)")
    query(stub, db, "INSERT INTO t (id, x) VALUES (1, 'kept')")
    statements: list[str | tuple[str, tuple[object, ...]]] = [
        ("INSERT INTO t (id, x) VALUES (?, ?)", (2, "rolled back")),
        "UPDATE t SET x = 'changed' WHERE id = 1",
        "CREATE TABLE u (y BIGINT)",
        failing,
        "INSERT INTO t (id, x) VALUES (9, 'never')",
    ]
    error = expect_error(code, batch, stub, db, statements)
    assert error_info(error).metadata["statement_index"] == "3"
    assert "statement 3" in error.details()
    assert rows(query(stub, db, "SELECT id, x FROM t")) == [(1, "kept")]
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELECT * FROM u")


def test_batch_size_limits(stub: Stub, db: str) -> None:
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Batch, pb.BatchRequest(database=db))
    too_many = pb.BatchRequest(database=db, statements=[pb.Statement(sql="SELECT 1")] * 10_001)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Batch, too_many)


def test_a_large_batch_commits_every_row(stub: Stub, db: str) -> None:
    query(stub, db, "CREATE TABLE t (id BIGINT PRIMARY KEY, x TEXT)")
    batch(stub, db, [("INSERT INTO t (id, x) VALUES (?, ?)", (i, f"row {i}")) for i in range(2000)])
    assert rows(query(stub, db, "SELECT count(*), sum(id) FROM t")) == [(2000, sum(range(2000)))]
