"""The one interface every metadata engine implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from services.metadata.model import DatabaseInfo, ImportSummary, Limits, Statement, StatementResult


class MetadataBackend(Protocol):
    """A SQL engine holding named databases.

    The core has already validated names, parameter values, statement counts and
    rejected transaction control; a backend adds what only its engine can know.

    Errors: every engine exception is translated, in one place per backend, into a
    `services.runtime.errors` type with the engine's message: syntax and parameter
    count -> InvalidArgument; unique violation -> AlreadyExists; foreign-key, check
    and not-null violations -> FailedPrecondition; time limit -> DeadlineExceeded;
    a lock that outlasts the busy timeout -> Unavailable; row or size limit ->
    ResourceExhausted. An unknown database is NotFound. A failed call changes nothing.

    Concurrency: every method may be called concurrently from the event loop; blocking
    engine work must not run on it.
    """

    async def open(self) -> None:
        """Connect or prepare storage; called once before serving."""

    async def close(self) -> None:
        """Release connections; called once after serving."""

    async def probe(self) -> bool:
        """True when the engine answers."""

    async def create_database(self, name: str) -> DatabaseInfo:
        """Create an empty database; AlreadyExists if the name is taken."""

    async def list_databases(self) -> list[DatabaseInfo]:
        """Every database, sorted by name."""

    async def delete_database(self, name: str) -> None:
        """Drop a database and all its data; NotFound if absent."""

    async def execute(
        self, database: str, statements: Sequence[Statement], *, read_only: bool, in_batch: bool, limits: Limits
    ) -> list[StatementResult]:
        """Run the statements in order as one transaction, all or nothing.

        A statement with `bulk` runs once per row of its columns (like executemany) and returns
        no rows; one that would (RETURNING) fails with `model.bulk_returns_rows()`.
        A failure carries ErrorInfo metadata "statement_index" (see `model.mark_statement`).
        With `read_only`, any statement that would write fails with InvalidArgument
        (reason READ_ONLY) and nothing is written.
        """

    def export(self, database: str, *, schema_only: bool) -> AsyncIterator[str]:
        """Stream a SQL dump (DDL, then rows unless schema_only) from one consistent snapshot."""

    async def import_dump(self, database: str, sql: str, *, limits: Limits) -> ImportSummary:
        """Apply a SQL dump in one transaction; a failing statement applies nothing."""
