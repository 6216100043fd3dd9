"""Group commit for one SQLite database: write transactions that arrive together share one COMMIT.

A durable COMMIT costs an fsync, often more than the statements it commits. Callers queue
their transaction; one drain task takes everything queued, runs it on the writer as a group
(each transaction in its own savepoint, see `_Connection.run_group`) and hands every caller
its own outcome once the shared COMMIT is durable. A lone caller waits for nothing: its
transaction starts at once, and only transactions that arrive while it runs are grouped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from services.metadata.model import Limits, Statement, StatementResult
from services.runtime.errors import StrataError, Unavailable

# A group stops growing at either bound, so one slow group never holds many callers.
MAX_GROUP_JOBS = 64
MAX_GROUP_STATEMENTS = 10_000

Outcome = list[StatementResult] | StrataError


@dataclass
class GroupJob:
    """One caller's transaction, waiting for its group."""

    statements: Sequence[Statement]
    limits: Limits
    in_batch: bool
    done: asyncio.Future[Outcome] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GroupCommitter:
    """The queue and drain task of one database. `run` executes a group on the writer and returns
    one outcome per job; an exception from it (e.g. the database was deleted) fails the group."""

    def __init__(self, run: Callable[[list[GroupJob]], Awaitable[list[Outcome]]], wait_seconds: float) -> None:
        self._run = run
        self._wait_seconds = wait_seconds
        self._queue: list[GroupJob] = []
        self._drainer: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return bool(self._queue) or self._drainer is not None

    async def submit(self, statements: Sequence[Statement], limits: Limits, *, in_batch: bool) -> list[StatementResult]:
        job = GroupJob(statements, limits, in_batch)
        self._queue.append(job)
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain())
        # Shielded: a caller that gives up does not stop a transaction that may already be running;
        # one still queued is withdrawn and never runs.
        try:
            outcome = await asyncio.wait_for(asyncio.shield(job.done), self._wait_seconds or None)
        except asyncio.CancelledError:
            if job in self._queue:
                self._queue.remove(job)
            raise
        except TimeoutError:
            if job not in self._queue:  # its group is running: it finishes like any other
                outcome = await asyncio.shield(job.done)
            else:
                self._queue.remove(job)
                raise Unavailable(
                    f"the database stayed busy with other writers for {self._wait_seconds:g} s",
                    reason="DATABASE_LOCKED",
                ) from None
        if isinstance(outcome, StrataError):
            raise outcome
        return outcome

    def _take(self) -> list[GroupJob]:
        jobs: list[GroupJob] = []
        statements = 0
        while self._queue and len(jobs) < MAX_GROUP_JOBS:
            size = len(self._queue[0].statements)
            if jobs and statements + size > MAX_GROUP_STATEMENTS:
                break
            jobs.append(self._queue.pop(0))
            statements += size
        return jobs

    async def _drain(self) -> None:
        jobs: list[GroupJob] = []
        try:
            while self._queue:
                jobs = self._take()
                try:
                    outcomes: list[Outcome | Exception] = list(await self._run(jobs))
                except Exception as exc:  # noqa: BLE001 - every caller of the group gets it
                    outcomes = [exc] * len(jobs)
                for job, outcome in zip(jobs, outcomes, strict=True):
                    if job.done.done():
                        continue
                    if isinstance(outcome, Exception) and not isinstance(outcome, StrataError):
                        job.done.set_exception(outcome)
                    else:
                        job.done.set_result(outcome)
                jobs = []
        finally:
            # Reached with work left only when the drain task itself was cancelled (shutdown).
            self._drainer = None
            for job in [*jobs, *self._queue]:
                if not job.done.done():
                    job.done.cancel()
            self._queue.clear()
