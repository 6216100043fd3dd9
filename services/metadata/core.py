"""The metadata service's logic, independent of gRPC: validation shared by every engine."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from services.metadata.backends.base import MetadataBackend
from services.metadata.config import MetadataSettings
from services.metadata.model import (
    DatabaseInfo,
    ImportSummary,
    Limits,
    Statement,
    StatementResult,
    bulk_returns_rows,
    mark_statement,
    nan_parameter,
)
from services.metadata.names import check_name, name_from_page_token, page_token_for
from services.metadata.sqltext import leading_keyword, reject_transaction_control
from services.runtime.errors import InvalidArgument, ResourceExhausted, StrataError

MAX_BATCH_STATEMENTS = 10_000
# Statements that exist to return rows; a bulk (columns) statement returns none.
_QUERY_KEYWORDS = frozenset({"SELECT", "VALUES", "EXPLAIN", "PRAGMA", "SHOW", "TABLE"})
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class MetadataCore:
    """Databases and statements over one backend."""

    def __init__(self, backend: MetadataBackend, settings: MetadataSettings) -> None:
        self.backend = backend
        self.limits = Limits(
            statement_timeout=settings.statement_timeout_seconds,
            max_rows=settings.max_rows,
            max_response_bytes=settings.max_response_bytes,
        )
        self.max_import_bytes = settings.max_import_bytes

    async def create_database(self, name: str) -> DatabaseInfo:
        return await self.backend.create_database(check_name(name))

    async def list_databases(self, page_size: int, page_token: str) -> tuple[list[DatabaseInfo], str]:
        if not 0 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size {page_size} is out of range: use 0..{MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})",
                reason="INVALID_PAGE_SIZE",
            )
        size = page_size or DEFAULT_PAGE_SIZE
        after = name_from_page_token(page_token) if page_token else None
        databases = [db for db in await self.backend.list_databases() if after is None or db.name > after]
        page = databases[:size]
        next_token = page_token_for(page[-1].name) if len(databases) > size else ""
        return page, next_token

    async def delete_database(self, name: str) -> None:
        await self.backend.delete_database(check_name(name))

    def limits_within(self, caller_seconds: float | None) -> Limits:
        """The limits for one call: a caller who gives up sooner than the statement limit frees the engine sooner."""
        if caller_seconds is None or caller_seconds >= self.limits.statement_timeout:
            return self.limits
        return dataclasses.replace(self.limits, statement_timeout=max(caller_seconds, 0.001))

    async def query(
        self, database: str, statement: Statement, *, read_only: bool, caller_seconds: float | None = None
    ) -> StatementResult:
        check_name(database)
        _check_statement(statement, 0, in_batch=False)
        results = await self.backend.execute(
            database, [statement], read_only=read_only, in_batch=False, limits=self.limits_within(caller_seconds)
        )
        return results[0]

    async def batch(
        self, database: str, statements: Sequence[Statement], *, caller_seconds: float | None = None
    ) -> list[StatementResult]:
        check_name(database)
        if not 1 <= len(statements) <= MAX_BATCH_STATEMENTS:
            raise InvalidArgument(
                f"a batch holds 1..{MAX_BATCH_STATEMENTS} statements; this one has {len(statements)}",
                reason="INVALID_BATCH_SIZE",
            )
        checked = ""
        for index, statement in enumerate(statements):
            # Batches usually repeat one statement text: check each distinct text once.
            if statement.sql != checked or statement.bulk is not None:
                _check_statement(statement, index, in_batch=True)
                checked = statement.sql
        return await self.backend.execute(
            database, statements, read_only=False, in_batch=True, limits=self.limits_within(caller_seconds)
        )

    def export(self, database: str, *, schema_only: bool) -> AsyncIterator[str]:
        check_name(database)
        return self.backend.export(database, schema_only=schema_only)

    async def import_dump(self, database: str, pieces: AsyncIterator[bytes]) -> ImportSummary:
        """Apply a UTF-8 SQL dump that arrives in pieces; the database is named before the first piece."""
        if not database:
            raise InvalidArgument("the first ImportRequest must name the database", reason="MISSING_DATABASE")
        check_name(database)
        received: list[bytes] = []
        size = 0
        async for piece in pieces:
            size += len(piece)
            if size > self.max_import_bytes:
                raise ResourceExhausted(
                    f"the dump is larger than {self.max_import_bytes} bytes (STRATA_METADATA_MAX_IMPORT_BYTES)",
                    reason="IMPORT_TOO_LARGE",
                )
            received.append(piece)
        try:
            sql = b"".join(received).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"the dump is not UTF-8: {exc}", reason="DUMP_NOT_UTF8") from exc
        return await self.backend.import_dump(database, sql, limits=self.limits)


def _check_statement(statement: Statement, index: int, *, in_batch: bool) -> None:
    try:
        if not statement.sql or statement.sql.isspace():
            raise InvalidArgument("the statement is empty", reason="EMPTY_STATEMENT")
        reject_transaction_control(statement.sql)
        if statement.bulk is not None and leading_keyword(statement.sql) in _QUERY_KEYWORDS:
            raise bulk_returns_rows()
        params = statement.params
        if float in map(type, params):
            for position, value in enumerate(params):
                if value != value:  # only NaN is unequal to itself
                    raise nan_parameter(f"parameter {position + 1}")
    except StrataError as error:
        raise mark_statement(error, index, in_batch=in_batch) from None
