"""The one place sqlite3 exceptions become Strata errors."""

from __future__ import annotations

import sqlite3

from services.metadata.backends.sqlite_guard import Guard
from services.runtime.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    StrataError,
    Unavailable,
)

# Extended result codes (sqlite3.h); the primary code is the low byte.
_UNIQUE = {2067, 1555, 2579}  # SQLITE_CONSTRAINT_UNIQUE, _PRIMARYKEY, _ROWID
_PRECONDITIONS = {
    787: "FOREIGN_KEY_VIOLATION",
    1299: "NOT_NULL_VIOLATION",
    275: "CHECK_VIOLATION",
    1811: "TRIGGER_CONSTRAINT",
}


class NeedsWriter(Exception):
    """A statement tried on a read connection turned out to write."""


def translate(exc: sqlite3.Error, guard: Guard, statement_timeout: float) -> StrataError | NeedsWriter:
    message = str(exc)
    if isinstance(exc, sqlite3.ProgrammingError):
        if "one statement at a time" in message:
            return InvalidArgument(
                "a Query runs exactly one statement; send several as a Batch", reason="MULTIPLE_STATEMENTS"
            )
        if "bindings" in message:
            return InvalidArgument(message, reason="PARAMETER_COUNT")
        return InvalidArgument(message, reason="SQL_ERROR")
    code = getattr(exc, "sqlite_errorcode", None) or 0
    primary = code & 0xFF
    # Denials inside nested prepares (e.g. table-valued pragmas) surface as SQLITE_ERROR.
    if guard.denied and (primary == sqlite3.SQLITE_AUTH or message == "not authorized"):
        if guard.denied == "WRITE":
            return NeedsWriter()
        return InvalidArgument(guard.denied, reason="FORBIDDEN_STATEMENT")
    if primary == sqlite3.SQLITE_CONSTRAINT:
        if code in _UNIQUE:
            return AlreadyExists(message, reason="UNIQUE_VIOLATION")
        return FailedPrecondition(message, reason=_PRECONDITIONS.get(code, "CONSTRAINT_VIOLATION"))
    if primary == sqlite3.SQLITE_INTERRUPT:
        return DeadlineExceeded(
            f"the statement ran past its {statement_timeout:g} s time limit and was interrupted",
            reason="STATEMENT_TIMEOUT",
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return Unavailable(f"the database stayed locked: {message}", reason="DATABASE_LOCKED")
    if primary == sqlite3.SQLITE_READONLY:
        return InvalidArgument(f"the statement writes, but the call is read-only: {message}", reason="READ_ONLY")
    if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_NOMEM):
        return ResourceExhausted(message, reason="STORAGE_FULL")
    if primary in (
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CORRUPT,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_NOTADB,
        sqlite3.SQLITE_PROTOCOL,
    ):
        return Unavailable(f"storage error: {message}", reason="STORAGE_ERROR")
    if primary == sqlite3.SQLITE_RANGE:
        return InvalidArgument(message, reason="PARAMETER_COUNT")
    if primary == sqlite3.SQLITE_MISMATCH:
        return InvalidArgument(message, reason="DATATYPE_MISMATCH")
    # SQLITE_ERROR and the rest: syntax errors, unknown tables and columns, limits of the SQL itself.
    return InvalidArgument(message, reason="SQL_ERROR")
