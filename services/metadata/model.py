"""Plain values the core and the backends exchange; no gRPC, no engine types."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from services.runtime.errors import InvalidArgument, ResourceExhausted, StrataError

# One SQL value: NULL, 64-bit integer, double, text or blob.
SqlValue = None | int | float | str | bytes

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class Columns(NamedTuple):
    """Bulk parameters column by column: `values[c][r]` is row r's value for placeholder c."""

    row_count: int
    values: list[Sequence[SqlValue]]  # lists, or the request's own repeated fields

    @property
    def width(self) -> int:
        return len(self.values)

    def rows(self) -> list[tuple[SqlValue, ...]]:
        """One tuple per row, for engines that bind row by row."""
        return list(zip(*self.values, strict=True)) if self.values else [()] * self.row_count

    def flat(self, start: int, stop: int) -> list[SqlValue]:
        """Rows start..stop-1 as one row-major list (slice assignments, so it runs in C)."""
        width = len(self.values)
        out: list[SqlValue] = [None] * ((stop - start) * width)
        for position, column in enumerate(self.values):
            out[position::width] = column[start:stop]
        return out


class Statement(NamedTuple):
    """One SQL statement with its positional `?` parameters (a tuple: built once per batched statement).

    A bulk statement has `bulk` instead: it runs once per row, like executemany.
    """

    sql: str
    params: tuple[SqlValue, ...] = ()
    bulk: Columns | None = None

    @property
    def width(self) -> int:
        """How many parameters each run binds."""
        return self.bulk.width if self.bulk is not None else len(self.params)


@dataclass(frozen=True)
class Limits:
    """Per-statement time limit and per-call result limits."""

    statement_timeout: float
    max_rows: int
    max_response_bytes: int


@dataclass(slots=True)
class StatementResult:
    """What one statement returned and did."""

    columns: list[str]
    rows: list[tuple[SqlValue, ...]]
    changes: int = 0
    last_row_id: int = 0
    rows_read: int = 0
    rows_written: int = 0
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class DatabaseInfo:
    name: str
    size_bytes: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True)
class ImportSummary:
    statements_executed: int
    rows_written: int


def bulk_returns_rows() -> InvalidArgument:
    """A statement bound to columns runs once per row; rows it returned would have nowhere to go."""
    return InvalidArgument(
        "a statement with columns runs once per row and returns no rows; send a SELECT or RETURNING with params",
        reason="BULK_RETURNS_ROWS",
    )


def mark_statement(error: StrataError, index: int, *, in_batch: bool) -> StrataError:
    """Name the failing statement in the error, so a Batch caller knows which one to fix."""
    error.metadata["statement_index"] = str(index)
    if in_batch and not error.message.startswith("statement "):
        error.message = f"statement {index}: {error.message}"
        error.args = (error.message,)
    return error


class ResultBudget:
    """Counts rows and approximate bytes across one call, raising once a limit is passed."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.rows = 0
        self.bytes = 0

    def add_row(self, row: tuple[SqlValue, ...]) -> None:
        self.rows += 1
        size = 4
        for value in row:
            if isinstance(value, (str, bytes)):
                size += len(value) + 4
            else:
                size += 10
        self.bytes += size
        if self.rows > self.limits.max_rows:
            raise ResourceExhausted(
                f"the result has more than {self.limits.max_rows} rows; add a LIMIT or page with WHERE",
                reason="TOO_MANY_ROWS",
                metadata={"max_rows": str(self.limits.max_rows)},
            )
        if self.bytes > self.limits.max_response_bytes:
            raise ResourceExhausted(
                f"the result is larger than {self.limits.max_response_bytes} bytes; select fewer rows or columns",
                reason="RESPONSE_TOO_LARGE",
                metadata={"max_response_bytes": str(self.limits.max_response_bytes)},
            )


def nan_parameter(where: str) -> InvalidArgument:
    """SQLite stores a NaN as NULL, and PostgreSQL keeps it: refused on every engine, so that no
    value changes on its way in and both answer alike."""
    return InvalidArgument(
        f"{where} is NaN, which SQL engines do not agree on (SQLite stores NULL); send null or a number",
        reason="NAN_PARAMETER",
    )
