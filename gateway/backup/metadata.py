"""Metadata databases: list, export to a file, import from a file, and read a dump back via a scratch database."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.backup.errors import BackupError
from gateway.backup.layers import CALL_TIMEOUT, Layers, calling
from strata.metadata.v1 import metadata_pb2

SCRATCH_PREFIX = "strata_backup_scratch_"
SCRATCH_MAX_AGE_SECONDS = 6 * 3600
IMPORT_PIECE = 1 << 20
QUERY_PAGE = 5000


def _all_databases(layers: Layers) -> list[metadata_pb2.Database]:
    found: list[metadata_pb2.Database] = []
    token = ""
    with calling("metadata", layers.addresses.metadata, "ListDatabases"):
        while True:
            page = layers.metadata.ListDatabases(
                metadata_pb2.ListDatabasesRequest(page_size=1000, page_token=token), timeout=CALL_TIMEOUT
            )
            found += page.databases
            token = page.next_page_token
            if not token:
                return found


def list_databases(layers: Layers) -> list[str]:
    """Every database but the scratch copies backups make."""
    return [d.name for d in _all_databases(layers) if not d.name.startswith(SCRATCH_PREFIX)]


def _scratch_born(database: metadata_pb2.Database) -> float | None:
    """When a scratch database was made: from its name (every backend keeps names), else its create_time."""
    stamp = database.name.removeprefix(SCRATCH_PREFIX).split("_", 1)[0]
    if stamp.isdigit():
        return float(stamp)
    return float(database.create_time.seconds) or None


def sweep_scratch(layers: Layers, older_than_seconds: float = SCRATCH_MAX_AGE_SECONDS) -> list[str]:
    """Drop scratch databases a crashed backup left behind (old enough that no running backup owns them)."""
    swept = []
    for database in _all_databases(layers):
        if not database.name.startswith(SCRATCH_PREFIX):
            continue
        born = _scratch_born(database)
        if born is not None and time.time() - born > older_than_seconds:
            with contextlib.suppress(BackupError):
                delete_database(layers, database.name)
                swept.append(database.name)
    return swept


def export_database(layers: Layers, name: str, path: Path) -> None:
    with calling("metadata", layers.addresses.metadata, f"Export of database {name!r}"), path.open("wb") as out:
        for piece in layers.metadata.Export(metadata_pb2.ExportRequest(database=name), timeout=CALL_TIMEOUT):
            out.write(piece.data)


def has_schema(layers: Layers, name: str) -> bool:
    """Whether a database holds any table, index or view (its schema-only dump is more than BEGIN/COMMIT)."""
    with calling("metadata", layers.addresses.metadata, f"Export of database {name!r}"):
        text = b"".join(
            p.data
            for p in layers.metadata.Export(
                metadata_pb2.ExportRequest(database=name, schema_only=True), timeout=CALL_TIMEOUT
            )
        ).decode("utf-8", "replace")
    return "CREATE" in text.upper()


def import_database(layers: Layers, name: str, path: Path) -> metadata_pb2.ImportResponse:
    def pieces() -> Iterator[metadata_pb2.ImportRequest]:
        yield metadata_pb2.ImportRequest(database=name)
        with path.open("rb") as handle:
            while block := handle.read(IMPORT_PIECE):
                yield metadata_pb2.ImportRequest(data=block)

    with calling("metadata", layers.addresses.metadata, f"Import into database {name!r}"):
        reply: metadata_pb2.ImportResponse = layers.metadata.Import(pieces(), timeout=CALL_TIMEOUT)
    return reply


def create_database(layers: Layers, name: str) -> None:
    with calling("metadata", layers.addresses.metadata, f"CreateDatabase {name!r}"):
        layers.metadata.CreateDatabase(metadata_pb2.CreateDatabaseRequest(name=name), timeout=CALL_TIMEOUT)


def delete_database(layers: Layers, name: str) -> None:
    with calling("metadata", layers.addresses.metadata, f"DeleteDatabase {name!r}"):
        layers.metadata.DeleteDatabase(metadata_pb2.DeleteDatabaseRequest(name=name), timeout=CALL_TIMEOUT)


def _plain(value: metadata_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)


def _typed(value: Any) -> metadata_pb2.Value:
    if isinstance(value, int):
        return metadata_pb2.Value(int_value=value)
    return metadata_pb2.Value(text_value=str(value))


def query(layers: Layers, database: str, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with calling("metadata", layers.addresses.metadata, f"Query on database {database!r}"):
        reply = layers.metadata.Query(
            metadata_pb2.QueryRequest(database=database, sql=sql, params=[_typed(p) for p in params], read_only=True),
            timeout=CALL_TIMEOUT,
        )
    columns = list(reply.result.columns)
    return [dict(zip(columns, (_plain(v) for v in row.values), strict=True)) for row in reply.result.rows]


def paged_query(layers: Layers, database: str, select: str, keys: tuple[str, str]) -> Iterator[dict[str, Any]]:
    """Rows of `select` (which must expose `keys` as columns) in key order, QUERY_PAGE at a time.

    `select` is wrapped as a subquery, so the paging works for joins too and stays portable SQL.
    """
    first, second = keys
    after: tuple[Any, Any] | None = None
    while True:
        if after is None:
            sql = f"SELECT * FROM ({select}) AS page ORDER BY {first}, {second} LIMIT {QUERY_PAGE}"
            rows = query(layers, database, sql)
        else:
            sql = (
                f"SELECT * FROM ({select}) AS page WHERE {first} > ? OR ({first} = ? AND {second} > ?)"
                f" ORDER BY {first}, {second} LIMIT {QUERY_PAGE}"
            )
            rows = query(layers, database, sql, (after[0], after[0], after[1]))
        yield from rows
        if len(rows) < QUERY_PAGE:
            return
        after = (rows[-1][first], rows[-1][second])


@contextlib.contextmanager
def scratch_copy(layers: Layers, dump: Path) -> Iterator[tuple[str, metadata_pb2.ImportResponse]]:
    """The dump imported into a throwaway database on the same service (proving it imports), then dropped."""
    name = f"{SCRATCH_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:12]}"
    create_database(layers, name)
    try:
        yield name, import_database(layers, name, dump)
    finally:
        with contextlib.suppress(Exception):
            delete_database(layers, name)
