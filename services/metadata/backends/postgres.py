"""PostgreSQL backend: each Strata database is one schema in the DSN's PostgreSQL database.

Why schemas and not PostgreSQL databases: one connection pool serves every database
(a connection is bound to one PostgreSQL database, but `search_path` switches schema
per transaction), CREATE/DROP SCHEMA are transactional and fast where CREATE DATABASE
copies a template and cannot run in a transaction, and the operator manages one DSN.
A catalog table `strata_catalog.databases` maps names to schemas and keeps creation
times. Schemas are a namespace, not a security boundary: SQL can still name another
schema explicitly, so give tenants that must not see each other separate DSNs/roles.

Every call is one transaction on one pooled connection: `BEGIN` plus `set_config` of
search_path, statement_timeout and lock_timeout in a single round trip (which also
proves the database exists), the statements, then COMMIT. `?` placeholders become
server-side parameters (see `sqltext.PostgresText`); automatic prepared statements are
off because one statement text means different tables in different schemas.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import ExecStatus
from psycopg_pool import AsyncConnectionPool

from services.metadata.backends.postgres_dump import dump_statements
from services.metadata.backends.postgres_errors import translate, translated
from services.metadata.config import MetadataSettings
from services.metadata.model import (
    INT64_MAX,
    INT64_MIN,
    DatabaseInfo,
    ImportSummary,
    Limits,
    ResultBudget,
    SqlValue,
    Statement,
    StatementResult,
    bulk_returns_rows,
    mark_statement,
)
from services.metadata.sqltext import PostgresText, leading_keyword, without_leading_comments
from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound, StrataError
from services.runtime.settings import ConfigError

CATALOG = "strata_catalog"
# Session-level commands would outlive the call on a pooled connection or escape its limits.
_FORBIDDEN_KEYWORDS = frozenset(
    {"SET", "RESET", "DISCARD", "COPY", "VACUUM", "LISTEN", "UNLISTEN", "PREPARE", "EXECUTE", "DEALLOCATE", "LOAD"}
)
_CHANGE_VERBS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})


def schema_for(name: str) -> str:
    if len(name) <= 60:
        return f"db_{name}"
    return f"db_{name[:50]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def sql_value(value: Any) -> SqlValue:
    """A PostgreSQL result value as one of the five contract types."""
    if value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value if INT64_MIN <= value <= INT64_MAX else str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and INT64_MIN <= value <= INT64_MAX:
            return int(value)
        return float(value)
    if isinstance(value, (datetime, date, dtime)):
        return value.isoformat()
    return str(value)


class PostgresBackend:
    """The scale-out engine: PostgreSQL through psycopg 3 and its async pool."""

    def __init__(self, settings: MetadataSettings) -> None:
        if not settings.postgres_dsn:
            raise ConfigError("STRATA_METADATA_POSTGRES_DSN is required when STRATA_METADATA_BACKEND=postgres")
        self.settings = settings
        self.pool = AsyncConnectionPool(
            settings.postgres_dsn,
            min_size=settings.postgres_pool_min,
            max_size=settings.postgres_pool_max,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": None},
            timeout=max(settings.busy_timeout_seconds, 0.1),
            name="strata-metadata",
        )
        self._catalog_ready = False

    async def open(self) -> None:
        # Serve even while PostgreSQL is down: health stays NOT_SERVING until the probe reaches it.
        await self.pool.open(wait=False)
        with contextlib.suppress(psycopg.Error):
            await self._ensure_catalog()

    async def _ensure_catalog(self) -> None:
        if self._catalog_ready:
            return
        async with self.pool.connection() as conn:
            for ddl in (
                f"CREATE SCHEMA IF NOT EXISTS {CATALOG}",
                f"CREATE TABLE IF NOT EXISTS {CATALOG}.databases (name text PRIMARY KEY, "
                "schema_name text NOT NULL UNIQUE, created_at timestamptz NOT NULL DEFAULT now())",
            ):
                # Two servers starting at once may race on IF NOT EXISTS; the loser's object exists anyway.
                with contextlib.suppress(psycopg.errors.UniqueViolation):
                    await conn.execute(ddl)
        self._catalog_ready = True

    async def close(self) -> None:
        await self.pool.close()

    async def probe(self) -> bool:
        await self._ensure_catalog()
        async with self.pool.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")
        return True

    async def create_database(self, name: str) -> DatabaseInfo:
        async with translated(self.settings.statement_timeout_seconds):
            await self._ensure_catalog()
        async with translated(self.settings.statement_timeout_seconds), self.pool.connection() as conn:
            try:
                async with conn.transaction():
                    cur = await conn.execute(
                        f"INSERT INTO {CATALOG}.databases (name, schema_name) VALUES (%s, %s) RETURNING created_at",
                        (name, schema_for(name)),
                    )
                    row = await cur.fetchone()
                    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema_for(name))))
            except psycopg.errors.UniqueViolation:
                raise AlreadyExists(f"database {name!r} already exists", reason="DATABASE_EXISTS") from None
        return DatabaseInfo(name=name, size_bytes=0, created_at=row[0] if row else None)

    async def list_databases(self) -> list[DatabaseInfo]:
        async with translated(self.settings.statement_timeout_seconds):
            await self._ensure_catalog()
        async with translated(self.settings.statement_timeout_seconds), self.pool.connection() as conn:
            cur = await conn.execute(
                f"""SELECT d.name, d.created_at,
                       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
                          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = d.schema_name AND c.relkind IN ('r', 'm', 'p'))
                  FROM {CATALOG}.databases d ORDER BY d.name COLLATE "C" """
            )
            return [DatabaseInfo(name=n, size_bytes=s, created_at=c) for n, c, s in await cur.fetchall()]

    async def delete_database(self, name: str) -> None:
        lock_ms = max(1, int(self.settings.busy_timeout_seconds * 1000))
        async with translated(self.settings.statement_timeout_seconds):
            await self._ensure_catalog()
        async with translated(self.settings.statement_timeout_seconds), self.pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", (str(lock_ms),))
                cur = await conn.execute(
                    f"DELETE FROM {CATALOG}.databases WHERE name = %s RETURNING schema_name", (name,)
                )
                row = await cur.fetchone()
                if row is None:
                    raise NotFound(f"database {name!r} does not exist", reason="DATABASE_NOT_FOUND")
                await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(row[0])))

    @contextlib.asynccontextmanager
    async def _session(
        self, database: str, limits: Limits, *, read_only: bool, isolation: str = "READ COMMITTED"
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One transaction on a pooled connection with the database's schema on search_path."""
        statement_ms = max(1, int(limits.statement_timeout * 1000))
        lock_ms = max(1, int(self.settings.busy_timeout_seconds * 1000))
        start = sql.SQL(
            "BEGIN ISOLATION LEVEL {isolation}{mode}; "
            "SELECT set_config('search_path', quote_ident(schema_name), true), "
            "set_config('statement_timeout', {statement_ms}, true), set_config('lock_timeout', {lock_ms}, true) "
            "FROM {catalog}.databases WHERE name = {name}"
        ).format(
            isolation=sql.SQL(isolation),
            mode=sql.SQL(" READ ONLY" if read_only else ""),
            statement_ms=sql.Literal(str(statement_ms)),
            lock_ms=sql.Literal(str(lock_ms)),
            catalog=sql.Identifier(CATALOG),
            name=sql.Literal(database),
        )
        try:
            await self._ensure_catalog()
            async with self.pool.connection() as conn:
                async with translated(limits.statement_timeout):
                    cur = await conn.execute(start)
                    cur.nextset()
                    found = await cur.fetchone()
                try:
                    if found is None:
                        raise NotFound(f"database {database!r} does not exist", reason="DATABASE_NOT_FOUND")
                    yield conn
                except BaseException:
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute("ROLLBACK")
                    raise
                async with translated(limits.statement_timeout):
                    await conn.execute("COMMIT")
        except psycopg.Error as exc:  # the pool (PoolTimeout), or a connection lost while returning it
            raise translate(exc, limits.statement_timeout) from exc

    async def execute(
        self, database: str, statements: Sequence[Statement], *, read_only: bool, in_batch: bool, limits: Limits
    ) -> list[StatementResult]:
        texts = []
        for index, statement in enumerate(statements):
            try:
                texts.append(_checked_text(statement))
            except StrataError as error:
                raise mark_statement(error, index, in_batch=in_batch) from None
        budget = ResultBudget(limits)
        results: list[StatementResult] = []
        async with self._session(database, limits, read_only=read_only) as conn:
            if len(statements) > 1 and all(statement.bulk is None for statement in statements):
                return await _run_pipelined(conn, statements, texts, budget, limits, in_batch=in_batch)
            # One at a time; a bulk statement pipelines its own rows.
            for index, (statement, text) in enumerate(zip(statements, texts, strict=True)):
                try:
                    async with translated(limits.statement_timeout):
                        results.append(await _run_one(conn, statement, text, budget))
                except StrataError as error:
                    raise mark_statement(error, index, in_batch=in_batch) from error.__cause__
        return results

    async def export(self, database: str, *, schema_only: bool) -> AsyncIterator[str]:
        limits = Limits(statement_timeout=3600.0, max_rows=0, max_response_bytes=0)
        async with self._session(database, limits, read_only=True, isolation="REPEATABLE READ") as conn:
            async with translated(limits.statement_timeout):
                cur = await conn.execute("SELECT current_schema()")
                row = await cur.fetchone()
                schema = row[0] if row else ""
                buffer: list[str] = []
                size = 0
                async for text in dump_statements(conn, schema, schema_only=schema_only):
                    buffer.append(text)
                    size += len(text)
                    if size >= 64 * 1024:
                        yield "".join(buffer)
                        buffer, size = [], 0
                if buffer:
                    yield "".join(buffer)

    async def import_dump(self, database: str, sql_text: str, *, limits: Limits) -> ImportSummary:
        statements = PostgresText(sql_text).statements
        if statements and _is_wrapper(statements[0], ("BEGIN", "START")):
            statements.pop(0)
        if statements and _is_wrapper(statements[-1], ("COMMIT", "END")):
            statements.pop()
        written = 0
        async with self._session(database, limits, read_only=False) as conn:
            for index, text in enumerate(statements):
                try:
                    keyword = leading_keyword(text)
                    if keyword in _FORBIDDEN_KEYWORDS or keyword in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT"):
                        raise InvalidArgument(
                            f"{keyword} is not allowed in an imported dump", reason="FORBIDDEN_STATEMENT"
                        )
                    async with translated(limits.statement_timeout):
                        cur = await conn.execute(text.encode())
                        written += _changes(cur.statusmessage)
                except StrataError as error:
                    raise mark_statement(error, index, in_batch=True) from error.__cause__
        return ImportSummary(statements_executed=len(statements), rows_written=written)


def _is_wrapper(statement: str, keywords: tuple[str, ...]) -> bool:
    words = without_leading_comments(statement).split()
    return bool(words) and words[0].upper() in keywords and len(words) <= 2


def _checked_text(statement: Statement) -> PostgresText:
    text = PostgresText(statement.sql)
    if len(text.statements) > 1:
        raise InvalidArgument(
            "a Query runs exactly one statement; send several as a Batch", reason="MULTIPLE_STATEMENTS"
        )
    keyword = leading_keyword(statement.sql)
    if keyword in _FORBIDDEN_KEYWORDS:
        raise InvalidArgument(f"{keyword} is not allowed", reason="FORBIDDEN_STATEMENT")
    if text.placeholders != statement.width:
        raise InvalidArgument(
            f"the statement has {text.placeholders} ? placeholders but {statement.width} parameters were given",
            reason="PARAMETER_COUNT",
        )
    return text


def _changes(status: str | None) -> int:
    words = (status or "").split()
    if words and words[0] in _CHANGE_VERBS and words[-1].isdigit():
        return int(words[-1])
    return 0


async def _send(cur: psycopg.AsyncCursor[Any], statement: Statement, text: PostgresText) -> None:
    if statement.bulk is not None:
        if text.returning:
            raise bulk_returns_rows()
        # psycopg pipelines the runs: one round trip for all rows.
        await cur.executemany(text.query, statement.bulk.rows())
    elif text.placeholders:
        await cur.execute(text.query, statement.params)
    else:
        # No parameters: send the text untouched, so a '%' needs no escaping.
        await cur.execute(statement.sql.encode())


async def _collect(
    cur: psycopg.AsyncCursor[Any], budget: ResultBudget, seconds: float, *, bulk: bool = False
) -> StatementResult:
    columns = [c.name for c in cur.description] if cur.description else []
    rows: list[tuple[SqlValue, ...]] = []
    if columns:
        for raw in await cur.fetchall():
            row = tuple(sql_value(v) for v in raw)
            budget.add_row(row)
            rows.append(row)
    # executemany leaves the total in rowcount; one statement's count is in its status.
    changes = max(cur.rowcount, 0) if bulk else _changes(cur.statusmessage)
    return StatementResult(columns, rows, changes, 0, len(rows), changes, seconds)


async def _run_one(
    conn: psycopg.AsyncConnection[Any], statement: Statement, text: PostgresText, budget: ResultBudget
) -> StatementResult:
    started = time.perf_counter()
    cur = conn.cursor()
    await _send(cur, statement, text)
    return await _collect(cur, budget, time.perf_counter() - started, bulk=statement.bulk is not None)


async def _run_pipelined(
    conn: psycopg.AsyncConnection[Any],
    statements: Sequence[Statement],
    texts: Sequence[PostgresText],
    budget: ResultBudget,
    limits: Limits,
    *,
    in_batch: bool,
) -> list[StatementResult]:
    """Several statements in one pipeline: one network round trip instead of one per statement.

    The server runs them in order and stops at the first failure; that statement is the first
    whose cursor holds no successful result. Each statement reports an equal share of the
    pipeline's time, since the server does not time them one by one.
    """
    cursors: list[psycopg.AsyncCursor[Any]] = []
    started = time.perf_counter()
    try:
        async with conn.pipeline():
            for statement, text in zip(statements, texts, strict=True):
                cursors.append(conn.cursor())
                await _send(cursors[-1], statement, text)
    except psycopg.Error as exc:
        index = next((i for i, cur in enumerate(cursors) if not _succeeded(cur)), len(cursors) - 1)
        raise mark_statement(translate(exc, limits.statement_timeout), index, in_batch=in_batch) from exc
    share = (time.perf_counter() - started) / max(len(cursors), 1)
    results = []
    for index, cur in enumerate(cursors):
        try:
            async with translated(limits.statement_timeout):
                results.append(await _collect(cur, budget, share))
        except StrataError as error:
            raise mark_statement(error, index, in_batch=in_batch) from error.__cause__
    return results


def _succeeded(cur: psycopg.AsyncCursor[Any]) -> bool:
    result = cur.pgresult
    return result is not None and result.status in (ExecStatus.COMMAND_OK, ExecStatus.TUPLES_OK)
