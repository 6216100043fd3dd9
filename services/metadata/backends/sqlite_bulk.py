"""Bulk inserts on SQLite as multi-row VALUES, a few hundred rows per statement.

`executemany` steps the statement once per row, and Python's sqlite3 drops and retakes the
interpreter lock around every step; one `INSERT ... VALUES (?,?),(?,?),...` inserts a chunk
of rows in one step, about twice as fast here. Only the plainest shape is rewritten, where
the two are the same statement run row by row (conflict clauses, triggers, changes and
last_insert_rowid all behave alike):

    INSERT [OR <conflict>] INTO <table> [(<columns>)] VALUES (?, ?, ...)
    REPLACE INTO <table> [(<columns>)] VALUES (?, ?, ...)

Anything else (WITH, SELECT, DEFAULT VALUES, ON CONFLICT, RETURNING, literals among the
values, comments) runs through executemany unchanged.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

from services.metadata.model import Columns, SqlValue

# Under SQLite's 32,766 variables for any width up to 130 columns, and large enough that the
# per-statement cost vanishes.
MAX_VARIABLES = 16_000
MAX_ROWS = 250

_NAME = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_PLAIN_INSERT = re.compile(
    rf"""^\s*(?P<head>
        (?:INSERT(?:\s+OR\s+(?:ROLLBACK|ABORT|REPLACE|FAIL|IGNORE))?|REPLACE)
        \s+INTO\s+{_NAME}(?:\s*\.\s*{_NAME})?
        (?:\s*\(\s*{_NAME}(?:\s*,\s*{_NAME})*\s*\))?
        \s*VALUES)\s*
    (?P<row>\(\s*\?(?:\s*,\s*\?)*\s*\))
    \s*;?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)


@functools.lru_cache(maxsize=256)
def _shape(sql: str) -> tuple[str, str, int] | None:
    match = _PLAIN_INSERT.match(sql)
    if match is None:
        return None
    row = match.group("row")
    return match.group("head"), "(" + ", ".join("?" * row.count("?")) + ")", row.count("?")


@functools.lru_cache(maxsize=256)
def _text(head: str, row: str, count: int) -> str:
    return f"{head} {', '.join([row] * count)}"


def multirow_chunks(sql: str, bulk: Columns) -> Iterator[tuple[str, list[SqlValue]]] | None:
    """(statement, flat parameters) per chunk of rows, or None when `sql` is not a plain insert.

    A column count that does not match the placeholders also gets None, so the engine's own
    message reports it.
    """
    shape = _shape(sql)
    if shape is None or not bulk.row_count:
        return None
    head, row, width = shape
    if bulk.width != width:
        return None
    per = max(1, min(MAX_ROWS, MAX_VARIABLES // width))

    def chunks() -> Iterator[tuple[str, list[SqlValue]]]:
        for start in range(0, bulk.row_count, per):
            stop = min(start + per, bulk.row_count)
            yield _text(head, row, stop - start), bulk.flat(start, stop)

    return chunks()
