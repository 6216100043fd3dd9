"""SQLite bulk inserts as multi-row VALUES: only the plain shape is rewritten, and it behaves like executemany."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from services.metadata.backends.sqlite_bulk import MAX_ROWS, multirow_chunks
from services.metadata.model import Columns

ROWS = Columns(2, [[1, 2], ["a", "b"]])


def columns(rows: Sequence[tuple[Any, ...]]) -> Columns:
    return Columns(len(rows), [list(column) for column in zip(*rows, strict=True)])


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (id, x) VALUES (?, ?)",
        "insert into t values(?,?);",
        "INSERT OR IGNORE INTO main.t (id, x) VALUES (?, ?)",
        'REPLACE INTO "odd ""name""" ("id", x) VALUES ( ? , ? ) ',
    ],
)
def test_plain_inserts_are_rewritten(sql: str) -> None:
    chunks = multirow_chunks(sql, ROWS)
    assert chunks is not None
    [(text, params)] = list(chunks)
    assert text.upper().endswith("VALUES (?, ?), (?, ?)")
    assert params == [1, "a", 2, "b"]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (id, x) VALUES (?, ?) RETURNING id",
        "INSERT INTO t (id, x) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET x = excluded.x",
        "INSERT INTO t (id, x) SELECT ?, ? UNION VALUES (?, ?)",
        "INSERT INTO t (id, x) VALUES (?, 'fixed')",
        "WITH c AS (SELECT 1) INSERT INTO t (id, x) VALUES (?, ?)",
        "INSERT INTO t (id, x) VALUES (?, ?) -- trailing comment",
        "UPDATE t SET x = ? WHERE id = ?",
        "INSERT INTO t (id, x) VALUES (?, ?), (?, ?)",
    ],
)
def test_anything_else_runs_through_executemany(sql: str) -> None:
    assert multirow_chunks(sql, ROWS) is None


def test_a_column_count_unlike_the_placeholders_is_left_to_the_engine() -> None:
    assert multirow_chunks("INSERT INTO t (id, x) VALUES (?, ?)", Columns(1, [[1], ["a"], [2]])) is None


def test_chunks_cover_every_row_in_order() -> None:
    rows = [(i, str(i)) for i in range(MAX_ROWS * 2 + 7)]
    chunks = multirow_chunks("INSERT INTO t (id, x) VALUES (?, ?)", columns(rows))
    assert chunks is not None
    flat = [p for _text, params in chunks for p in params]
    assert flat == [v for row in rows for v in row]


@pytest.mark.parametrize("verb", ["INSERT OR IGNORE", "INSERT OR REPLACE", "INSERT"])
def test_rewritten_insert_matches_executemany(verb: str) -> None:
    rows = [(i % 150, f"v{i}") for i in range(600)] if verb != "INSERT" else [(i, f"v{i}") for i in range(600)]
    sql = f"{verb} INTO t (id, x) VALUES (?, ?)"
    outcomes = []
    for rewrite in (False, True):
        conn = sqlite3.connect(":memory:", isolation_level=None)
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x TEXT)")
        conn.execute("CREATE TABLE log (n INTEGER)")
        conn.execute("CREATE TRIGGER count_rows AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.id); END")
        before = conn.total_changes
        cursor = conn.cursor()
        chunks = multirow_chunks(sql, columns(rows)) if rewrite else None
        if chunks is None:
            assert not rewrite
            cursor.executemany(sql, rows)
            changes = cursor.rowcount
        else:
            changes = 0
            for text, params in chunks:
                cursor.execute(text, params)
                changes += cursor.rowcount
        last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        outcomes.append(
            (
                changes,
                conn.total_changes - before,
                last,
                conn.execute("SELECT id, x FROM t ORDER BY id").fetchall(),
                conn.execute("SELECT n FROM log").fetchall(),
            )
        )
    assert outcomes[0] == outcomes[1]
