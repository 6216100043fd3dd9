"""Bulk statements: `Statement.columns` binds many rows at once, inside the batch's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, error_info, expect_error, query, rows

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SCHEMA = "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, blob BYTEA)"
SCHEMA_SQLITE = "CREATE TABLE t (id BIGINT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, blob BLOB)"
INSERT = "INSERT INTO t (id, name, score, blob) VALUES (?, ?, ?, ?)"


def columns(table: Sequence[Sequence[Any]]) -> pb.ParamColumns:
    """Rows of Python values as typed columns; a column's type is that of its first non-NULL value."""
    bulk = pb.ParamColumns(row_count=len(table))
    for position in range(len(table[0]) if table else 0):
        column = bulk.columns.add()
        values = [row[position] for row in table]
        sample = next((x for x in values if x is not None), None)
        if sample is None:
            column.null_rows.extend(range(len(values)))
            continue
        field, blank = {int: ("int_values", 0), float: ("double_values", 0.0), str: ("text_values", "")}.get(
            type(sample), ("bytes_values", b"")
        )
        getattr(column, field).extend(blank if x is None else x for x in values)
        column.null_rows.extend(i for i, x in enumerate(values) if x is None)
    return bulk


def create_table(stub: Stub, db: str) -> None:
    try:
        query(stub, db, SCHEMA)
    except grpc.RpcError:  # SQLite has no BYTEA type name; any engine may pick either spelling
        query(stub, db, SCHEMA_SQLITE)


def bulk_batch(stub: Stub, db: str, *statements: pb.Statement) -> list[pb.Result]:
    return list(stub.Batch(pb.BatchRequest(database=db, statements=statements), timeout=60).results)


def test_bulk_insert_binds_every_row_exactly(stub: Stub, db: str) -> None:
    create_table(stub, db)
    table = [(i, f"name-{i}", i / 4, bytes([i % 256, 0, 255])) for i in range(1, 1001)]
    table[10] = (INT64_MAX, None, None, None)
    table[20] = (INT64_MIN, "", -0.5, b"")
    result = bulk_batch(stub, db, pb.Statement(sql=INSERT, columns=columns(table)))[0]
    assert result.meta.changes == 1000
    assert not result.rows and not result.columns
    stored = rows(query(stub, db, "SELECT id, name, score, blob FROM t ORDER BY id"))
    assert stored == sorted(table)


def test_bulk_statement_mixes_with_others_in_one_transaction(stub: Stub, db: str) -> None:
    create_table(stub, db)
    results = bulk_batch(
        stub,
        db,
        pb.Statement(
            sql="INSERT INTO t (id, name) VALUES (?, ?)", params=[pb.Value(int_value=0), pb.Value(text_value="x")]
        ),
        pb.Statement(sql="INSERT INTO t (id, name) VALUES (?, ?)", columns=columns([(1, "a"), (2, "b"), (3, "c")])),
        pb.Statement(sql="UPDATE t SET name = ? WHERE id = ?", columns=columns([("B", 2), ("C", 3), ("none", 99)])),
        pb.Statement(sql="SELECT count(*) FROM t"),
    )
    assert [r.meta.changes for r in results[:3]] == [1, 3, 2]
    assert rows(results[3]) == [(4,)]
    assert rows(query(stub, db, "SELECT id, name FROM t ORDER BY id")) == [(0, "x"), (1, "a"), (2, "B"), (3, "C")]


def test_an_all_null_column_binds_null(stub: Stub, db: str) -> None:
    create_table(stub, db)
    bulk = pb.ParamColumns(row_count=2)
    bulk.columns.add().int_values.extend([7, 8])
    bulk.columns.add().null_rows.extend([0, 1])
    bulk_batch(stub, db, pb.Statement(sql="INSERT INTO t (id, name) VALUES (?, ?)", columns=bulk))
    assert rows(query(stub, db, "SELECT id, name FROM t ORDER BY id")) == [(7, None), (8, None)]


def test_a_failing_row_rolls_back_the_whole_batch(stub: Stub, db: str) -> None:
    create_table(stub, db)
    query(stub, db, "INSERT INTO t (id, name) VALUES (500, 'kept')")
    error = expect_error(
        grpc.StatusCode.ALREADY_EXISTS,
        bulk_batch,
        stub,
        db,
        pb.Statement(sql="DELETE FROM t WHERE id = 500"),
        pb.Statement(sql="INSERT INTO t (id) VALUES (?)", columns=columns([(i,) for i in range(1, 1001)] + [(1,)])),
    )
    assert error_info(error).metadata["statement_index"] == "1"
    assert rows(query(stub, db, "SELECT id, name FROM t")) == [(500, "kept")]


def _bulk(row_count: int, *lists: dict[str, Any]) -> pb.ParamColumns:
    return pb.ParamColumns(row_count=row_count, columns=[pb.ParamColumn(**fields) for fields in lists])


@pytest.mark.parametrize(
    ("statement", "says"),
    [
        (
            pb.Statement(sql="INSERT INTO t (id) VALUES (?)", columns=_bulk(3, {"int_values": [1, 2]})),
            "2 values for 3 rows",
        ),
        (pb.Statement(sql="INSERT INTO t (id) VALUES (?)", columns=_bulk(0)), "row_count"),
        (
            pb.Statement(
                sql="INSERT INTO t (id) VALUES (?)", columns=_bulk(1, {"int_values": [1], "text_values": ["a"]})
            ),
            "more than one typed list",
        ),
        (pb.Statement(sql="INSERT INTO t (id) VALUES (?)", columns=_bulk(2, {"null_rows": [0]})), "no values"),
        (
            pb.Statement(sql="INSERT INTO t (id) VALUES (?)", columns=_bulk(1, {"int_values": [1], "null_rows": [4]})),
            "row 4",
        ),
        (
            pb.Statement(
                sql="INSERT INTO t (id) VALUES (?)",
                params=[pb.Value(int_value=1)],
                columns=_bulk(1, {"int_values": [1]}),
            ),
            "either params or columns",
        ),
        (
            pb.Statement(
                sql="INSERT INTO t (id, score) VALUES (?, ?)",
                columns=_bulk(2, {"int_values": [1, 2]}, {"double_values": [0.5, float("nan")]}),
            ),
            "column 1 is NaN",
        ),
        (pb.Statement(sql="SELECT id FROM t WHERE id = ?", columns=_bulk(1, {"int_values": [1]})), "returns no rows"),
        (
            pb.Statement(sql="INSERT INTO t (id) VALUES (?) RETURNING id", columns=_bulk(1, {"int_values": [1]})),
            "returns no rows",
        ),
        (
            pb.Statement(
                sql="INSERT INTO t (id) VALUES (?)", columns=_bulk(1, {"int_values": [1]}, {"int_values": [2]})
            ),
            "",
        ),
    ],
    ids=[
        "short-column",
        "no-rows",
        "two-lists",
        "missing-values",
        "null-row-out-of-range",
        "both",
        "nan",
        "select",
        "returning",
        "arity",
    ],
)
def test_bad_columns_are_invalid_argument_and_change_nothing(
    stub: Stub, db: str, statement: pb.Statement, says: str
) -> None:
    create_table(stub, db)
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        bulk_batch,
        stub,
        db,
        pb.Statement(sql="INSERT INTO t (id) VALUES (?)", params=[pb.Value(int_value=42)]),
        statement,
    )
    assert error_info(error).metadata["statement_index"] == "1"
    assert says in error.details()
    assert rows(query(stub, db, "SELECT id FROM t")) == []
