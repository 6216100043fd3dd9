"""Export streams a SQL dump; Import applies one in a single transaction."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, batch, error_info, expect_error, query, rows
from tests.contract.metadata.conftest import unique_name

INT64_MAX = 2**63 - 1


def export(stub: Stub, database: str, schema_only: bool = False) -> tuple[bytes, int]:
    pieces = [m.data for m in stub.Export(pb.ExportRequest(database=database, schema_only=schema_only), timeout=60)]
    return b"".join(pieces), len(pieces)


def import_(stub: Stub, database: str, dump: bytes, piece: int = 10_000) -> pb.ImportResponse:
    def messages() -> Iterator[pb.ImportRequest]:
        yield pb.ImportRequest(database=database, data=dump[:piece])
        for start in range(piece, len(dump), piece):
            yield pb.ImportRequest(data=dump[start : start + piece])

    return stub.Import(messages(), timeout=60)


@pytest.fixture
def other(stub: Stub) -> Iterator[str]:
    name = unique_name("copy")
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
    yield name
    stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))


def fill(stub: Stub, db: str, count: int = 900) -> None:
    batch(
        stub,
        db,
        [
            "CREATE TABLE parent (id BIGINT PRIMARY KEY, name TEXT NOT NULL, score DOUBLE PRECISION, raw BYTEA)",
            "CREATE TABLE child (id BIGINT PRIMARY KEY, parent_id BIGINT REFERENCES parent (id), note TEXT)",
            "CREATE INDEX child_parent ON child (parent_id)",
            *[
                (
                    "INSERT INTO parent (id, name, score, raw) VALUES (?, ?, ?, ?)",
                    (i, f"name 'quoted' ; -- {i}", i / 3, bytes([i % 256]) * 40),
                )
                for i in range(count)
            ],
            ("INSERT INTO parent (id, name, score, raw) VALUES (?, ?, ?, ?)", (INT64_MAX, "max", None, None)),
            ("INSERT INTO child (id, parent_id, note) VALUES (?, ?, ?)", (1, INT64_MAX, "línea\nnueva ?")),
        ],
    )


def snapshot(stub: Stub, db: str) -> list[list[tuple[object, ...]]]:
    return [
        rows(query(stub, db, "SELECT id, name, score, raw FROM parent ORDER BY id")),
        rows(query(stub, db, "SELECT id, parent_id, note FROM child ORDER BY id")),
    ]


def test_export_then_import_reproduces_the_database(stub: Stub, db: str, other: str) -> None:
    fill(stub, db)
    dump, pieces = export(stub, db)
    assert pieces > 1, "a dump this size must stream in several messages"
    dump.decode("utf-8")
    summary = import_(stub, other, dump)
    assert summary.statements_executed >= 903
    assert summary.rows_written >= 902
    assert snapshot(stub, other) == snapshot(stub, db)
    # Constraints came along: the unique key and the foreign key still hold.
    expect_error(grpc.StatusCode.ALREADY_EXISTS, query, stub, other, "INSERT INTO parent (id, name) VALUES (1, 'x')")
    expect_error(
        grpc.StatusCode.FAILED_PRECONDITION, query, stub, other, "INSERT INTO child (id, parent_id) VALUES (2, -5)"
    )


def test_schema_only_export_has_tables_but_no_rows(stub: Stub, db: str, other: str) -> None:
    fill(stub, db, count=10)
    dump, _ = export(stub, db, schema_only=True)
    import_(stub, other, dump)
    assert rows(query(stub, other, "SELECT count(*) FROM parent")) == [(0,)]
    assert rows(query(stub, other, "SELECT count(*) FROM child")) == [(0,)]


def test_a_failing_import_applies_nothing(stub: Stub, db: str) -> None:
    dump = b"CREATE TABLE a (x BIGINT);\nINSERT INTO a (x) VALUES (1);\nINSERT INTO nowhere VALUES (2);\n"
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, import_, stub, db, dump)
    assert error_info(error).metadata["statement_index"] == "2"
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, db, "SELECT * FROM a")


def test_import_rejects_bad_input(stub: Stub, db: str) -> None:
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Import, iter([pb.ImportRequest(data=b"SELECT 1;")]))
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Import, iter([]))
    error = expect_error(
        grpc.StatusCode.INVALID_ARGUMENT, stub.Import, iter([pb.ImportRequest(database=db, data=b"SELECT '\xff';")])
    )
    assert error_info(error).reason == "DUMP_NOT_UTF8"
    expect_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        stub.Import,
        iter([pb.ImportRequest(database=db, data=b"ATTACH DATABASE 'x' AS x;")]),
    )


def test_export_of_an_empty_database_imports_cleanly(stub: Stub, db: str, other: str) -> None:
    dump, _ = export(stub, db)
    assert import_(stub, other, dump).rows_written == 0
