"""Query: typed values, records, meta, read_only, limits and every error mapping."""

from __future__ import annotations

import math

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, error_info, expect_error, py, query, rows
from tests.contract.metadata.conftest import MAX_ROWS, STATEMENT_TIMEOUT, Target

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

SCHEMA = (
    "CREATE TABLE item (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, price DOUBLE PRECISION, "
    "data BYTEA, qty BIGINT CHECK (qty >= 0))"
)


@pytest.fixture
def items(stub: Stub, db: str) -> str:
    query(stub, db, SCHEMA)
    return db


def test_values_round_trip_typed_including_int64_extremes(stub: Stub, items: str) -> None:
    values = [
        (INT64_MAX, "max", 1.5, b"\x00\xff", 0),
        (INT64_MIN, "min", -0.1, b"", 7),
        (0, "nulls", None, None, None),
        (2**53 + 1, "precise", math.pi, bytes(range(256)), INT64_MAX),
    ]
    for row in values:
        result = query(stub, items, "INSERT INTO item (id, name, price, data, qty) VALUES (?, ?, ?, ?, ?)", *row)
        assert result.meta.changes == 1
    result = query(stub, items, "SELECT id, name, price, data, qty FROM item ORDER BY id")
    assert list(result.columns) == ["id", "name", "price", "data", "qty"]
    assert rows(result) == sorted(values)
    kinds = [[x.WhichOneof("kind") for x in row.values] for row in result.rows]
    assert kinds[0] == ["int_value", "text_value", "double_value", "bytes_value", "int_value"]
    assert kinds[1][2:] == ["null_value", "null_value", "null_value"]
    # Parameters compare exactly too: no float rounding of 64-bit integers anywhere.
    assert rows(query(stub, items, "SELECT name FROM item WHERE id = ?", INT64_MAX)) == [("max",)]
    assert rows(query(stub, items, "SELECT name FROM item WHERE id = ?", 2**53 + 1)) == [("precise",)]
    assert rows(query(stub, items, "SELECT name FROM item WHERE id = ?", 2**53)) == []


def test_unset_value_is_null(stub: Stub, db: str) -> None:
    sql = "SELECT COALESCE(?, 'was null')"
    result = stub.Query(pb.QueryRequest(database=db, sql=sql, params=[pb.Value()])).result
    assert py(result.rows[0].values[0]) == "was null"


def test_records_are_keyed_by_column(stub: Stub, items: str) -> None:
    query(stub, items, "INSERT INTO item (id, name, price) VALUES (?, ?, ?)", 1, "a", 2.5)
    result = query(stub, items, "SELECT id, name AS label, price FROM item", as_records=True)
    assert list(result.columns) == ["id", "label", "price"]
    assert not result.rows
    assert [{k: py(x) for k, x in r.fields.items()} for r in result.records] == [{"id": 1, "label": "a", "price": 2.5}]


def test_meta_reports_changes_rows_and_duration(stub: Stub, items: str) -> None:
    insert = query(stub, items, "INSERT INTO item (id, name) VALUES (?, ?), (?, ?), (?, ?)", 1, "a", 2, "b", 3, "c")
    assert insert.meta.changes == 3
    assert insert.meta.rows_written == 3
    update = query(stub, items, "UPDATE item SET qty = ? WHERE id >= ?", 5, 2)
    assert update.meta.changes == 2
    select = query(stub, items, "SELECT id FROM item")
    assert select.meta.changes == 0
    assert select.meta.rows_written == 0
    assert select.meta.rows_read >= 3
    assert select.meta.duration.ToNanoseconds() > 0


def test_last_row_id_of_an_insert(stub: Stub, target: Target, db: str) -> None:
    # Engines without rowids (PostgreSQL) report 0; SQLite reports the inserted rowid.
    query(stub, db, "CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
    first = query(stub, db, "INSERT INTO t (id, x) VALUES (?, ?)", 41, "a").meta.last_row_id
    assert first == 41 if target.backend == "sqlite" else first in (0, 41)
    second = query(stub, db, "INSERT INTO t (id, x) VALUES (?, ?)", 42, "b").meta.last_row_id
    assert second == 42 if target.backend == "sqlite" else second in (0, 42)
    assert query(stub, db, "UPDATE t SET x = 'c'").meta.last_row_id in (0, 42)
    if target.backend == "sqlite":
        assert query(stub, db, "INSERT INTO t (x) VALUES (?)", "auto").meta.last_row_id == 43


def test_question_marks_in_strings_identifiers_and_comments_are_not_parameters(stub: Stub, db: str) -> None:
    sql = """SELECT '?' AS "a?", ? AS b, 'it''s ?' AS c -- a comment?
    /* another ? */ , '%s %' AS d"""
    result = query(stub, db, sql, 5)
    assert list(result.columns) == ["a?", "b", "c", "d"]
    assert rows(result) == [("?", 5, "it's ?", "%s %")]


def test_syntax_error_is_invalid_argument_with_the_engine_message(stub: Stub, db: str) -> None:
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELEC 1")
    assert "syntax" in error.details().lower()
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELECT * FROM no_such_table")


@pytest.mark.parametrize("params", [(), (1, 2)])
def test_wrong_parameter_count_is_invalid_argument(stub: Stub, db: str, params: tuple[int, ...]) -> None:
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELECT ?", *params)


def test_a_nan_parameter_is_invalid_argument_on_every_engine(stub: Stub, db: str) -> None:
    """SQLite would store NULL in its place, PostgreSQL NaN: refused, so nothing changes on the way in."""
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELECT ?, ?", 1.5, math.nan)
    assert "parameter 2 is NaN" in error.details() and error_info(error).reason == "NAN_PARAMETER"
    assert rows(query(stub, db, "SELECT ?", math.inf)) == [(math.inf,)]  # infinity both engines keep


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; SELECT 2",
        "CREATE TABLE a (x BIGINT); CREATE TABLE b (x BIGINT)",
    ],
)
def test_more_than_one_statement_is_rejected_and_runs_nothing(stub: Stub, db: str, sql: str) -> None:
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, sql)
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELECT * FROM a")


def test_a_trailing_semicolon_and_comment_are_one_statement(stub: Stub, db: str) -> None:
    assert rows(query(stub, db, "SELECT 1; -- done")) == [(1,)]


@pytest.mark.parametrize(
    "sql",
    [
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s",
        "/* sneaky */ begin transaction",
        "ATTACH DATABASE 'x' AS x",
        "DETACH DATABASE x",
        "SELECT load_extension('x')",
        "",
    ],
)
def test_forbidden_and_empty_statements_are_invalid_argument(stub: Stub, db: str, sql: str) -> None:
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, sql)


def test_unique_violation_is_already_exists_and_changes_nothing(stub: Stub, items: str) -> None:
    query(stub, items, "INSERT INTO item (id, name) VALUES (1, 'a')")
    expect_error(grpc.StatusCode.ALREADY_EXISTS, query, stub, items, "INSERT INTO item (id, name) VALUES (1, 'b')")
    # One multi-row insert whose second row collides: the first row must not stay.
    expect_error(
        grpc.StatusCode.ALREADY_EXISTS, query, stub, items, "INSERT INTO item (id, name) VALUES (2, 'b'), (3, 'a')"
    )
    assert rows(query(stub, items, "SELECT id, name FROM item")) == [(1, "a")]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO item (id, name, qty) VALUES (5, 'neg', -1)",  # CHECK
        "INSERT INTO item (id, name) VALUES (6, NULL)",  # NOT NULL
        "INSERT INTO child (id, item_id) VALUES (1, 999)",  # FOREIGN KEY
    ],
)
def test_constraint_violations_are_failed_precondition(stub: Stub, items: str, sql: str) -> None:
    query(stub, items, "CREATE TABLE child (id BIGINT PRIMARY KEY, item_id BIGINT REFERENCES item (id))")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, query, stub, items, sql)
    assert rows(query(stub, items, "SELECT count(*) FROM item")) == [(0,)]
    assert rows(query(stub, items, "SELECT count(*) FROM child")) == [(0,)]


def test_foreign_key_on_delete_is_failed_precondition(stub: Stub, items: str) -> None:
    query(stub, items, "CREATE TABLE child (id BIGINT PRIMARY KEY, item_id BIGINT REFERENCES item (id))")
    query(stub, items, "INSERT INTO item (id, name) VALUES (1, 'a')")
    query(stub, items, "INSERT INTO child (id, item_id) VALUES (1, 1)")
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, query, stub, items, "DELETE FROM item WHERE id = 1")
    assert rows(query(stub, items, "SELECT count(*) FROM item")) == [(1,)]


def test_read_only_runs_reads_and_rejects_writes_unchanged(stub: Stub, items: str) -> None:
    query(stub, items, "INSERT INTO item (id, name) VALUES (1, 'a')")
    assert rows(query(stub, items, "SELECT name FROM item", read_only=True)) == [("a",)]
    for sql in (
        "INSERT INTO item (id, name) VALUES (2, 'b')",
        "UPDATE item SET name = 'z'",
        "DELETE FROM item",
        "DROP TABLE item",
        "CREATE TABLE other (x BIGINT)",
        "WITH n AS (SELECT 3 AS id) INSERT INTO item (id, name) SELECT id, 'c' FROM n",
    ):
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, items, sql, read_only=True)
    assert rows(query(stub, items, "SELECT id, name FROM item")) == [(1, "a")]


def test_time_limit_interrupts_a_runaway_query(stub: Stub, target: Target, db: str) -> None:
    if not target.ours:
        pytest.skip("the time limit is server configuration")
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000000) SELECT count(*) FROM c"
    error = expect_error(grpc.StatusCode.DEADLINE_EXCEEDED, query, stub, db, sql)
    assert error_info(error).reason == "STATEMENT_TIMEOUT"
    assert str(STATEMENT_TIMEOUT).rstrip("0").rstrip(".") in error.details()
    # The database still answers afterwards.
    assert rows(query(stub, db, "SELECT 1")) == [(1,)]


def test_row_limit_is_resource_exhausted_and_a_write_over_it_rolls_back(stub: Stub, target: Target, db: str) -> None:
    if not target.ours:
        pytest.skip("the row limit is server configuration")
    numbers = f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {MAX_ROWS + 1}) "
    assert len(query(stub, db, numbers.replace(f"{MAX_ROWS + 1}", f"{MAX_ROWS}") + "SELECT x FROM c").rows) == MAX_ROWS
    error = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, query, stub, db, numbers + "SELECT x FROM c")
    assert error_info(error).reason == "TOO_MANY_ROWS"
    query(stub, db, "CREATE TABLE t (x BIGINT)")
    expect_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED, query, stub, db, numbers + "INSERT INTO t (x) SELECT x FROM c RETURNING x"
    )
    assert rows(query(stub, db, "SELECT count(*) FROM t")) == [(0,)]


def test_response_size_limit_is_resource_exhausted(stub: Stub, target: Target, db: str) -> None:
    if not target.ours:
        pytest.skip("the size limit is server configuration")
    query(stub, db, "CREATE TABLE t (x TEXT)")
    big = "x" * (1024 * 1024)
    for _ in range(5):
        query(stub, db, "INSERT INTO t (x) VALUES (?)", big)
    error = expect_error(grpc.StatusCode.RESOURCE_EXHAUSTED, query, stub, db, "SELECT x FROM t")
    assert error_info(error).reason == "RESPONSE_TOO_LARGE"


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT 'a\x00b'", ()),
        ("SELECT ?", ("a\x00b",)),
        ("SELECT 9223372036854775807 + 1", ()),
        ("SELECT 1 / 0", ()),
        ("SELECT CAST('x' AS BIGINT) + 1", ()),
        ("SELECT " + "(" * 2000 + "1" + ")" * 2000, ()),
        ("SELECT ?" + ", ?" * 40000, tuple(range(40001))),
        ("\x00", ()),
        (";", ()),
        ("-- only a comment", ()),
    ],
)
def test_odd_input_is_never_an_internal_error(stub: Stub, db: str, sql: str, params: tuple[object, ...]) -> None:
    try:
        query(stub, db, sql, *params)
    except grpc.RpcError as exc:
        assert exc.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), exc.details()
        assert error_info(exc).reason
