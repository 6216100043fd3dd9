"""CreateDatabase, ListDatabases, DeleteDatabase."""

from __future__ import annotations

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from tests.contract.metadata.client import Stub, error_info, expect_error, query, rows
from tests.contract.metadata.conftest import unique_name


def test_create_returns_the_database_and_a_second_create_is_already_exists(stub: Stub) -> None:
    name = unique_name()
    created = stub.CreateDatabase(pb.CreateDatabaseRequest(name=name)).database
    assert created.name == name
    try:
        error = expect_error(grpc.StatusCode.ALREADY_EXISTS, stub.CreateDatabase, pb.CreateDatabaseRequest(name=name))
        assert name in error.details()
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "a b", "x" * 65, "db.sqlite3", "é", ".hidden", "a\x00b"])
def test_bad_names_are_invalid_argument_and_never_paths(stub: Stub, name: str) -> None:
    error = expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.CreateDatabase, pb.CreateDatabaseRequest(name=name))
    assert error_info(error).reason == "INVALID_DATABASE_NAME"
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.Query, pb.QueryRequest(database=name, sql="SELECT 1"))


def test_names_use_the_whole_alphabet_and_64_characters(stub: Stub) -> None:
    name = ("Ab-9_" + unique_name()).ljust(64, "z")
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
    try:
        assert rows(query(stub, name, "SELECT 1")) == [(1,)]
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))


def test_list_pages_through_every_database_in_name_order(stub: Stub) -> None:
    prefix = unique_name("list")
    names = [f"{prefix}-{i}" for i in range(5)]
    for name in reversed(names):
        stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
    try:
        seen: list[str] = []
        token = ""
        pages = 0
        while True:
            page = stub.ListDatabases(pb.ListDatabasesRequest(page_size=2, page_token=token))
            assert len(page.databases) <= 2
            seen.extend(d.name for d in page.databases)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert seen == sorted(seen)
        assert [n for n in seen if n.startswith(prefix)] == names
        assert pages >= 3
        everything = stub.ListDatabases(pb.ListDatabasesRequest(page_size=1000)).databases
        assert all(d.size_bytes >= 0 for d in everything)
    finally:
        for name in names:
            stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))


@pytest.mark.parametrize(
    "request_",
    [
        pb.ListDatabasesRequest(page_size=-1),
        pb.ListDatabasesRequest(page_size=1001),
        pb.ListDatabasesRequest(page_token="not a token!"),
    ],
)
def test_list_rejects_bad_page_size_and_token(stub: Stub, request_: pb.ListDatabasesRequest) -> None:
    expect_error(grpc.StatusCode.INVALID_ARGUMENT, stub.ListDatabases, request_)


def test_delete_removes_data_and_then_is_not_found(stub: Stub) -> None:
    name = unique_name()
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
    query(stub, name, "CREATE TABLE t (id BIGINT PRIMARY KEY)")
    query(stub, name, "INSERT INTO t VALUES (?)", 1)
    stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))
    expect_error(grpc.StatusCode.NOT_FOUND, stub.DeleteDatabase, pb.DeleteDatabaseRequest(name=name))
    error = expect_error(grpc.StatusCode.NOT_FOUND, query, stub, name, "SELECT * FROM t")
    assert error_info(error).reason == "DATABASE_NOT_FOUND"
    listed = stub.ListDatabases(pb.ListDatabasesRequest(page_size=1000)).databases
    assert name not in [d.name for d in listed]
    # The name is free again, and the new database starts empty.
    stub.CreateDatabase(pb.CreateDatabaseRequest(name=name))
    try:
        assert rows(query(stub, name, "SELECT 1")) == [(1,)]
        expect_error(grpc.StatusCode.INVALID_ARGUMENT, query, stub, name, "SELECT * FROM t")
    finally:
        stub.DeleteDatabase(pb.DeleteDatabaseRequest(name=name))


def test_unknown_database_is_not_found_for_every_rpc(stub: Stub) -> None:
    name = unique_name("missing")
    expect_error(grpc.StatusCode.NOT_FOUND, query, stub, name, "SELECT 1")
    expect_error(
        grpc.StatusCode.NOT_FOUND,
        stub.Batch,
        pb.BatchRequest(database=name, statements=[pb.Statement(sql="SELECT 1")]),
    )
    expect_error(grpc.StatusCode.NOT_FOUND, lambda: list(stub.Export(pb.ExportRequest(database=name))))
    expect_error(grpc.StatusCode.NOT_FOUND, stub.Import, iter([pb.ImportRequest(database=name, data=b"SELECT 1;")]))
