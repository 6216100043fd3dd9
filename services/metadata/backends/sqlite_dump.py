"""SQL dumps of a SQLite database, and splitting a dump back into statements.

The dump is written here rather than with `Connection.iterdump()` so it can be
schema-only, lists insert columns explicitly (generated columns are skipped),
formats floats so they round-trip exactly, and reads one consistent snapshot.
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from services.metadata.sqltext import is_blank, without_leading_comments

CHUNK_CHARS = 64 * 1024
_HEADER = "BEGIN TRANSACTION;\n"
_FOOTER = "COMMIT;\n"
_FOREIGN_KEYS_OFF = re.compile(r"PRAGMA\s+foreign_keys\s*=\s*(OFF|0|false)\s*;?\s*$", re.IGNORECASE)
_PLAIN_TRANSACTION = re.compile(r"(BEGIN|COMMIT|END)(\s+TRANSACTION)?\s*;?\s*$", re.IGNORECASE)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NULL"
        if math.isinf(value):
            return "9e999" if value > 0 else "-9e999"
        return repr(value)
    if isinstance(value, bytes):
        return f"X'{value.hex()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _objects(conn: sqlite3.Connection) -> tuple[list[tuple[str, str]], list[str]]:
    """(table name, CREATE sql) in creation order, then indexes, triggers and views."""
    shadow: set[str] = set()
    try:
        shadow = {row[1] for row in conn.execute("PRAGMA table_list") if row[2] == "shadow"}
    except sqlite3.OperationalError:  # SQLite before 3.37
        pass
    tables, others = [], []
    for kind, name, sql in conn.execute(
        "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid"
    ):
        if name.startswith("sqlite_") or name in shadow:
            continue
        if kind == "table":
            tables.append((name, sql))
        else:
            others.append(sql)
    return tables, others


def _rows(conn: sqlite3.Connection, table: str) -> Iterator[str]:
    columns = [row[1] for row in conn.execute(f"PRAGMA table_xinfo({quote_identifier(table)})") if row[6] == 0]
    if not columns:
        return
    names = ",".join(quote_identifier(c) for c in columns)
    prefix = f"INSERT INTO {quote_identifier(table)}({names}) VALUES("
    for row in conn.execute(f"SELECT {names} FROM {quote_identifier(table)}"):
        yield prefix + ",".join(literal(v) for v in row) + ");\n"


def _statements(conn: sqlite3.Connection, *, schema_only: bool) -> Iterator[str]:
    yield _HEADER
    tables, others = _objects(conn)
    for name, sql in tables:
        yield sql + ";\n"
        if not schema_only:
            yield from _rows(conn, name)
    if not schema_only and conn.execute("SELECT 1 FROM sqlite_schema WHERE name='sqlite_sequence'").fetchone():
        yield 'DELETE FROM "sqlite_sequence";\n'
        yield from _rows(conn, "sqlite_sequence")
    for sql in others:
        yield sql + ";\n"
    yield _FOOTER


def dump_chunks(path: Path, *, schema_only: bool) -> Iterator[str]:
    """The dump in pieces of about CHUNK_CHARS, read inside one read transaction."""
    conn = sqlite3.connect(
        f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("BEGIN")
        buffer: list[str] = []
        size = 0
        for text in _statements(conn, schema_only=schema_only):
            buffer.append(text)
            size += len(text)
            if size >= CHUNK_CHARS:
                yield "".join(buffer)
                buffer, size = [], 0
        if buffer:
            yield "".join(buffer)
    finally:
        conn.close()


def split_script(sql: str) -> list[str]:
    """Statements of a script, split where SQLite's own tokenizer says a statement ends.

    A leading `PRAGMA foreign_keys=OFF`, BEGIN [TRANSACTION] and a trailing COMMIT/END, as
    dumps carry, are dropped: Import already runs the whole script as one transaction.
    """
    statements: list[str] = []
    start = 0
    pos = sql.find(";")
    while pos >= 0:
        candidate = sql[start : pos + 1]
        if sqlite3.complete_statement(candidate):
            if not is_blank(candidate):
                statements.append(candidate.strip())
            start = pos + 1
        pos = sql.find(";", pos + 1)
    if not is_blank(sql[start:]):
        statements.append(sql[start:].strip())
    # The sqlite3 shell's .dump starts with this; Import defers foreign keys to COMMIT anyway.
    while statements and _FOREIGN_KEYS_OFF.match(without_leading_comments(statements[0])):
        statements.pop(0)
    if statements and _is_plain(statements[0], ("BEGIN",)):
        statements.pop(0)
    if statements and _is_plain(statements[-1], ("COMMIT", "END")):
        statements.pop()
    return statements


def _is_plain(statement: str, keywords: tuple[str, ...]) -> bool:
    match = _PLAIN_TRANSACTION.match(without_leading_comments(statement))
    return match is not None and match.group(1).upper() in keywords
