"""The one place psycopg exceptions become Strata errors, by SQLSTATE."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
import psycopg_pool

from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
    StrataError,
    Unavailable,
)

_PRECONDITIONS = {
    "23503": "FOREIGN_KEY_VIOLATION",
    "23502": "NOT_NULL_VIOLATION",
    "23514": "CHECK_VIOLATION",
    "23P01": "EXCLUSION_VIOLATION",
    "23001": "RESTRICT_VIOLATION",
}


def translate(exc: Exception, statement_timeout: float) -> StrataError:
    if isinstance(exc, psycopg_pool.PoolTimeout):
        return Unavailable(f"no PostgreSQL connection became free in time: {exc}", reason="POOL_EXHAUSTED")
    state = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    message = (getattr(diag, "message_primary", None) or str(exc)).strip()
    if state == "23505":
        return AlreadyExists(message, reason="UNIQUE_VIOLATION")
    if state.startswith("23"):
        return FailedPrecondition(message, reason=_PRECONDITIONS.get(state, "CONSTRAINT_VIOLATION"))
    if state == "57014":
        return DeadlineExceeded(
            f"the statement ran past its {statement_timeout:g} s time limit and was cancelled",
            reason="STATEMENT_TIMEOUT",
        )
    if state in ("55P03", "40P01"):
        return Unavailable(f"the database stayed locked: {message}", reason="DATABASE_LOCKED")
    if state == "40001":
        return Aborted(message, reason="SERIALIZATION_FAILURE")
    if state == "25006":
        return InvalidArgument(f"the statement writes, but the Query is read_only: {message}", reason="READ_ONLY")
    if state.startswith(("53", "54")) and state != "54000":
        return ResourceExhausted(message, reason="ENGINE_LIMIT")
    if state.startswith(("08", "57", "58", "XX")) or (isinstance(exc, psycopg.OperationalError) and not state):
        return Unavailable(f"PostgreSQL is unavailable: {message}", reason="ENGINE_UNAVAILABLE")
    if state == "42501":
        return InvalidArgument(message, reason="FORBIDDEN_STATEMENT")
    if isinstance(exc, psycopg.ProgrammingError) and not state:
        return InvalidArgument(message, reason="PARAMETER_COUNT" if "param" in message else "SQL_ERROR")
    # Syntax (42...), data (22...), feature (0A...) and other statement errors are the caller's to fix.
    return InvalidArgument(message, reason="SQL_ERROR")


@contextlib.asynccontextmanager
async def translated(statement_timeout: float) -> AsyncIterator[None]:
    try:
        yield
    except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        raise translate(exc, statement_timeout) from exc
