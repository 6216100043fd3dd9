"""SQLite backend: one WAL file per database, parallel readers, one writer.

Layout: `<data_dir>/metadata/<name>.sqlite3`. Each open database keeps one write
connection (used under an asyncio lock, so writes queue without holding threads)
and up to `sqlite_readers` read connections opened read-only with `query_only`. A
single Query that only reads runs on a reader; a statement a reader refuses to
prepare because it writes is re-run on the writer. Every write call runs inside
BEGIN IMMEDIATE ... COMMIT, so a failed statement (or a result over the limits)
rolls back and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from services.metadata.backends.sqlite_bulk import multirow_chunks
from services.metadata.backends.sqlite_commits import GroupCommitter, GroupJob, Outcome
from services.metadata.backends.sqlite_dump import dump_chunks, split_script
from services.metadata.backends.sqlite_errors import NeedsWriter, translate
from services.metadata.backends.sqlite_guard import Guard
from services.metadata.config import MetadataSettings
from services.metadata.model import (
    Columns,
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
from services.metadata.sqltext import leading_keyword
from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound, StrataError, Unavailable

SUFFIX = ".sqlite3"
_READ_KEYWORDS = frozenset({"SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA"})
_INSERT_KEYWORDS = frozenset({"INSERT", "REPLACE", "WITH"})
# VACUUM INTO writes an arbitrary file; the authorizer has no action code for it.
_FORBIDDEN_KEYWORDS = frozenset({"VACUUM"})
_FETCH = 256

T = TypeVar("T")


class _Connection:
    """A sqlite3 connection with the guard its authorizer and progress handler consult."""

    def __init__(self, path: Path, *, writer: bool, settings: MetadataSettings) -> None:
        mode = "rw" if writer else "ro"
        self.conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode={mode}",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=settings.busy_timeout_seconds,
            cached_statements=256,
        )
        self.guard = Guard(allow_writes=writer)
        self.conn.execute(f"PRAGMA busy_timeout={int(settings.busy_timeout_seconds * 1000)}")
        self.conn.execute("PRAGMA foreign_keys=ON")
        if writer:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={settings.sqlite_synchronous.upper()}")
        else:
            self.conn.execute("PRAGMA query_only=1")
        self.guard.install(self.conn)
        # One reused cursor: a fresh cursor per statement costs more than the insert it runs.
        self.cursor = self.conn.cursor()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def _execute(self, statement: Statement, budget: ResultBudget, timeout: float) -> StatementResult:
        """One statement; raises sqlite3.Error untranslated (callers translate once, with the index)."""
        inserts = _keyword_allows_insert(statement.sql)
        conn, cursor = self.conn, self.cursor
        started = time.perf_counter()
        before = conn.total_changes
        self.guard.deadline = time.monotonic() + timeout
        cursor.execute(statement.sql, statement.params)
        return self._result(started, before, budget, inserts)

    def _result(self, started: float, before: int, budget: ResultBudget, inserts: bool) -> StatementResult:
        """The result of the statement the cursor just ran, reading its rows within the budget."""
        cursor = self.cursor
        rows: list[tuple[SqlValue, ...]] = []
        columns: list[str] = []
        if cursor.description:
            columns = [d[0] for d in cursor.description]
            while chunk := cursor.fetchmany(_FETCH):
                for row in chunk:
                    budget.add_row(row)
                rows.extend(chunk)
        written = self.conn.total_changes - before
        changes = cursor.rowcount
        if changes < 0:
            changes = written
        return StatementResult(
            columns,
            rows,
            changes,
            (cursor.lastrowid or 0) if changes and inserts else 0,
            len(rows),
            written,
            time.perf_counter() - started,
        )

    def run_read(self, statement: Statement, limits: Limits) -> StatementResult:
        """One statement on a read connection (raises NeedsWriter if it turns out to write)."""
        self.guard.denied = None
        try:
            return self._execute(statement, ResultBudget(limits), limits.statement_timeout)
        except sqlite3.Error as exc:
            raise mark_statement(_translated(exc, self.guard, limits), 0, in_batch=False) from exc
        except StrataError as error:
            raise mark_statement(error, 0, in_batch=False) from error.__cause__
        finally:
            self.guard.deadline = math.inf

    def run_transaction(
        self, statements: Sequence[Statement], limits: Limits, *, in_batch: bool, defer_foreign_keys: bool = False
    ) -> list[StatementResult]:
        """All statements in BEGIN IMMEDIATE ... COMMIT; any failure rolls everything back."""
        guard, conn = self.guard, self.conn
        try:
            guard.trusted_execute(conn, "BEGIN IMMEDIATE")
            if defer_foreign_keys:
                guard.trusted_execute(conn, "PRAGMA defer_foreign_keys=ON")
            results = self._run_statements(statements, limits, in_batch=in_batch)
            guard.trusted_execute(conn, "COMMIT")
        except sqlite3.Error as exc:  # BEGIN or COMMIT
            self._rollback()
            raise _translated(exc, guard, limits) from exc
        except BaseException:
            self._rollback()
            raise
        return results

    def run_group(self, jobs: Sequence[GroupJob]) -> list[list[StatementResult] | StrataError]:
        """Several callers' transactions committed together: one fsync for all of them.

        Each job runs inside its own savepoint, so a failing job is rolled back alone and the
        others still commit. When the shared transaction itself breaks (a failed COMMIT, such as
        a deferred foreign key, or an error that made SQLite abandon the transaction), nothing was
        committed and every job runs again in a transaction of its own, exactly as if never grouped.
        """
        if len(jobs) == 1:
            return [self._outcome(jobs[0])]
        guard, conn = self.guard, self.conn
        outcomes: list[list[StatementResult] | StrataError] = []
        try:
            guard.trusted_execute(conn, "BEGIN IMMEDIATE")
            for job in jobs:
                guard.trusted_execute(conn, "SAVEPOINT job")
                try:
                    outcomes.append(self._run_statements(job.statements, job.limits, in_batch=job.in_batch))
                except StrataError as error:
                    if not conn.in_transaction:
                        raise _GroupBroken from error
                    guard.trusted_execute(conn, "ROLLBACK TO job")
                    outcomes.append(error)
                guard.trusted_execute(conn, "RELEASE job")
            guard.trusted_execute(conn, "COMMIT")
        except (sqlite3.Error, _GroupBroken):
            self._rollback()
            return [self._outcome(job) for job in jobs]
        except BaseException:
            self._rollback()
            raise
        return outcomes

    def _outcome(self, job: GroupJob) -> list[StatementResult] | StrataError:
        try:
            return self.run_transaction(job.statements, job.limits, in_batch=job.in_batch)
        except StrataError as error:
            return error

    def _run_statements(
        self, statements: Sequence[Statement], limits: Limits, *, in_batch: bool
    ) -> list[StatementResult]:
        """The statements in order, in the caller's transaction; a failure is a marked StrataError."""
        budget = ResultBudget(limits)
        results: list[StatementResult] = []
        guard, conn, timeout = self.guard, self.conn, limits.statement_timeout
        guard.denied = None
        index = 0
        try:
            # The per-statement work of _execute, inlined: a Batch runs it up to 10,000 times per call.
            append, execute, cursor = results.append, self.cursor.execute, self.cursor
            perf_counter, monotonic = time.perf_counter, time.monotonic
            last_sql: str | None = None
            inserts = False
            for index, (sql, params, bulk) in enumerate(statements):  # noqa: B007 - index names the failure below
                if sql != last_sql:
                    inserts = _keyword_allows_insert(sql)
                    last_sql = sql
                started = perf_counter()
                before = conn.total_changes
                guard.deadline = monotonic() + timeout
                if bulk is not None:
                    append(self._run_bulk(sql, bulk, started, before, inserts))
                    continue
                execute(sql, params)
                if cursor.description:
                    append(self._result(started, before, budget, inserts))
                    continue
                written = conn.total_changes - before
                changes = cursor.rowcount
                if changes < 0:
                    changes = written
                last_row_id = (cursor.lastrowid or 0) if changes and inserts else 0
                append(StatementResult([], [], changes, last_row_id, 0, written, perf_counter() - started))
        except (sqlite3.Error, StrataError) as exc:
            error = _translated(exc, guard, limits) if isinstance(exc, sqlite3.Error) else exc
            mark_statement(error, index, in_batch=in_batch)
            raise error from (exc if isinstance(exc, sqlite3.Error) else exc.__cause__)
        finally:
            guard.deadline = math.inf
        return results

    def _run_bulk(self, sql: str, bulk: Columns, started: float, before: int, inserts: bool) -> StatementResult:
        """One statement run once per row of parameters, in the caller's transaction."""
        cursor = self.cursor
        chunks = multirow_chunks(sql, bulk)
        if chunks is not None:  # a plain INSERT: a few hundred rows per step (see sqlite_bulk)
            changes = 0
            for text, params in chunks:
                cursor.execute(text, params)
                changes += max(cursor.rowcount, 0)
        else:
            try:
                cursor.executemany(sql, bulk.rows())
            except sqlite3.ProgrammingError as exc:
                if "only execute DML" in str(exc):
                    raise bulk_returns_rows() from exc
                raise
            if cursor.description:  # INSERT ... RETURNING: the rows were dropped, so refuse the statement
                raise bulk_returns_rows()
            changes = cursor.rowcount
        written = self.conn.total_changes - before
        if changes < 0:
            changes = written
        last_row_id = 0
        if inserts and changes:
            last_row_id = self.conn.execute("SELECT last_insert_rowid()").fetchone()[0]
        return StatementResult([], [], changes, last_row_id, 0, written, time.perf_counter() - started)

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.guard.trusted_execute(self.conn, "ROLLBACK")


class _GroupBroken(Exception):
    """The shared transaction of a commit group is gone; its jobs must run one by one."""


def _keyword_allows_insert(sql: str) -> bool:
    """Whether the statement may run at all here, and whether it is an insert (for last_row_id)."""
    keyword = leading_keyword(sql)
    if keyword in _FORBIDDEN_KEYWORDS:
        raise InvalidArgument(f"{keyword} is not allowed", reason="FORBIDDEN_STATEMENT")
    return keyword in _INSERT_KEYWORDS


def _translated(exc: sqlite3.Error, guard: Guard, limits: Limits) -> StrataError:
    error = translate(exc, guard, limits.statement_timeout)
    if isinstance(error, NeedsWriter):
        raise error
    return error


class _Database:
    """One open SQLite database: a writer behind an asyncio lock and a pool of readers."""

    commits: GroupCommitter  # write transactions, grouped onto the writer

    def __init__(self, name: str, path: Path, settings: MetadataSettings) -> None:
        self.name, self.path, self.settings = name, path, settings
        self.closed = False
        # Calls currently using this database; only an unused one may be closed to free descriptors.
        self.users = 0
        self.write_lock = asyncio.Lock()
        self.reader_slots = asyncio.Semaphore(settings.sqlite_readers)
        self._writer: _Connection | None = None
        self._idle_readers: list[_Connection] = []
        self._readers_lock = threading.Lock()

    def writer(self) -> _Connection:
        if self._writer is None:
            self._writer = _Connection(self.path, writer=True, settings=self.settings)
        return self._writer

    @contextlib.contextmanager
    def reader(self) -> Iterator[_Connection]:
        with self._readers_lock:
            conn = self._idle_readers.pop() if self._idle_readers else None
        if conn is None:
            conn = _Connection(self.path, writer=False, settings=self.settings)
        try:
            yield conn
        finally:
            with self._readers_lock:
                if not self.closed:
                    self._idle_readers.append(conn)
            if self.closed:  # closed (evicted or deleted) while this reader ran
                conn.close()

    @property
    def idle(self) -> bool:
        # A writer thread abandoned by a cancelled call still holds the write lock; reader threads
        # abandoned that way close their own connection when they see the database closed.
        return self.users == 0 and not self.write_lock.locked() and not self.commits.busy

    def close_connections(self) -> None:
        with self._readers_lock:
            readers, self._idle_readers = self._idle_readers, []
        for conn in readers:
            conn.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class SqliteBackend:
    """The default engine: embedded, one file per database."""

    def __init__(self, settings: MetadataSettings) -> None:
        self.settings = settings
        self.root = settings.metadata_dir
        # Open databases, least recently used first.
        self._databases: OrderedDict[str, _Database] = OrderedDict()
        self._registry_lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(max_workers=settings.sqlite_readers + 2, thread_name_prefix="sqlite")

    async def _run(self, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn)
        except (OSError, sqlite3.Error) as exc:  # the data directory itself failed, not a statement
            raise Unavailable(f"metadata storage error: {exc}", reason="STORAGE_ERROR") from exc

    def _path(self, name: str) -> Path:
        return self.root / f"{name}{SUFFIX}"

    async def open(self) -> None:
        def prepare() -> None:
            self.root.mkdir(parents=True, exist_ok=True)
            for leftover in self.root.glob(".*.creating-*"):
                leftover.unlink(missing_ok=True)

        await self._run(prepare)

    async def close(self) -> None:
        async with self._registry_lock:
            databases, self._databases = list(self._databases.values()), OrderedDict()
        for db in databases:
            async with db.write_lock:
                db.closed = True
                await self._run(db.close_connections)
        self._executor.shutdown(wait=True)

    async def probe(self) -> bool:
        return await self._run(lambda: self.root.is_dir() and os.access(self.root, os.W_OK))

    async def _database(self, name: str) -> _Database:
        db = self._databases.get(name)
        if db is not None and not db.closed:
            self._databases.move_to_end(name)
            return db
        async with self._registry_lock:
            db = self._databases.get(name)
            if db is None or db.closed:
                if not await self._run(self._path(name).is_file):
                    raise NotFound(f"database {name!r} does not exist", reason="DATABASE_NOT_FOUND")
                db = self._databases[name] = _Database(name, self._path(name), self.settings)
                db.commits = GroupCommitter(functools.partial(self._run_group, db), self.settings.busy_timeout_seconds)
                self._close_idle_databases()
            return db

    @contextlib.asynccontextmanager
    async def _use(self, name: str) -> AsyncIterator[_Database]:
        db = await self._database(name)
        db.users += 1  # no await between lookup and this: eviction cannot slip in
        try:
            yield db
        finally:
            db.users -= 1

    def _close_idle_databases(self) -> None:
        """Close least recently used idle databases beyond the open-database limit (file descriptors)."""
        excess = len(self._databases) - self.settings.sqlite_open_databases
        for name, db in list(self._databases.items()):
            if excess <= 0:
                break
            if db.idle:
                del self._databases[name]
                db.closed = True
                self._executor.submit(db.close_connections)
                excess -= 1

    async def create_database(self, name: str) -> DatabaseInfo:
        path = self._path(name)

        def create() -> DatabaseInfo:
            # Built under a temporary name and linked into place, so a crash never leaves half a database.
            temp = self.root / f".{name}.creating-{uuid.uuid4().hex}"
            conn = sqlite3.connect(temp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
            try:
                os.link(temp, path)
            except FileExistsError:
                raise AlreadyExists(f"database {name!r} already exists", reason="DATABASE_EXISTS") from None
            finally:
                temp.unlink(missing_ok=True)
            _fsync_dir(self.root)
            return _info(name, path)

        async with self._registry_lock:
            return await self._run(create)

    async def list_databases(self) -> list[DatabaseInfo]:
        def scan() -> list[DatabaseInfo]:
            found = []
            for path in self.root.glob(f"*{SUFFIX}"):
                name = path.name[: -len(SUFFIX)]
                if not name.startswith("."):
                    with contextlib.suppress(FileNotFoundError):
                        found.append(_info(name, path))
            return sorted(found, key=lambda db: db.name)

        return await self._run(scan)

    async def delete_database(self, name: str) -> None:
        async with self._use(name) as db, self._registry_lock:
            if db.closed:  # a concurrent delete won
                raise NotFound(f"database {name!r} does not exist", reason="DATABASE_NOT_FOUND")
            async with db.write_lock:
                db.closed = True
                # Wait for every reader to finish before the files go.
                for _ in range(self.settings.sqlite_readers):
                    await db.reader_slots.acquire()
                self._databases.pop(name, None)

                def remove() -> None:
                    db.close_connections()
                    for suffix in ("", "-wal", "-shm"):
                        Path(f"{db.path}{suffix}").unlink(missing_ok=True)
                    _fsync_dir(self.root)

                await self._run(remove)

    async def execute(
        self, database: str, statements: Sequence[Statement], *, read_only: bool, in_batch: bool, limits: Limits
    ) -> list[StatementResult]:
        async with self._use(database) as db:
            return await self._execute_on(db, statements, read_only=read_only, in_batch=in_batch, limits=limits)

    async def _execute_on(
        self, db: _Database, statements: Sequence[Statement], *, read_only: bool, in_batch: bool, limits: Limits
    ) -> list[StatementResult]:
        if read_only or (
            len(statements) == 1 and statements[0].bulk is None and leading_keyword(statements[0].sql) in _READ_KEYWORDS
        ):
            try:
                return await self._read(db, statements[0], limits)
            except NeedsWriter:
                if read_only:
                    raise mark_statement(
                        InvalidArgument("the statement writes, but the Query is read_only", reason="READ_ONLY"),
                        0,
                        in_batch=False,
                    ) from None
        return await db.commits.submit(statements, limits, in_batch=in_batch)

    async def _run_group(self, db: _Database, jobs: list[GroupJob]) -> list[Outcome]:
        return await self._write(db, lambda conn: conn.run_group(jobs))

    async def _read(self, db: _Database, statement: Statement, limits: Limits) -> list[StatementResult]:
        def run() -> list[StatementResult]:
            with db.reader() as conn:
                return [conn.run_read(statement, limits)]

        async with db.reader_slots:
            if db.closed:
                raise NotFound(f"database {db.name!r} does not exist", reason="DATABASE_NOT_FOUND")
            try:
                return await self._run(run)
            except NeedsWriter:
                raise
            except sqlite3.Error as exc:  # opening the connection failed
                raise Unavailable(f"cannot open database {db.name!r}: {exc}", reason="STORAGE_ERROR") from exc

    async def _write(self, db: _Database, work: Callable[[_Connection], T]) -> T:
        try:
            await asyncio.wait_for(db.write_lock.acquire(), timeout=self.settings.busy_timeout_seconds or None)
        except TimeoutError:
            raise Unavailable(
                f"database {db.name!r} stayed locked by other writers for {self.settings.busy_timeout_seconds:g} s",
                reason="DATABASE_LOCKED",
            ) from None
        if db.closed:
            db.write_lock.release()
            raise NotFound(f"database {db.name!r} does not exist", reason="DATABASE_NOT_FOUND")

        def run() -> T:
            try:
                conn = db.writer()
            except sqlite3.Error as exc:
                raise Unavailable(f"cannot open database {db.name!r}: {exc}", reason="STORAGE_ERROR") from exc
            return work(conn)

        future = asyncio.get_running_loop().run_in_executor(self._executor, run)
        # The lock is released when the thread is done with the writer, not when the caller is:
        # a cancelled call must not let the next writer into a transaction still running.
        future.add_done_callback(lambda _: db.write_lock.release())
        return await asyncio.shield(future)

    async def export(self, database: str, *, schema_only: bool) -> AsyncIterator[str]:
        async with self._use(database) as db, db.reader_slots:
            if db.closed:
                raise NotFound(f"database {db.name!r} does not exist", reason="DATABASE_NOT_FOUND")
            chunks: Iterator[str] | None = None

            def start() -> Iterator[str]:
                return dump_chunks(db.path, schema_only=schema_only)

            chunks = await self._run(start)
            try:
                while (chunk := await self._run(lambda: next(chunks, None))) is not None:
                    yield chunk
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    await self._run(close)

    async def import_dump(self, database: str, sql: str, *, limits: Limits) -> ImportSummary:
        statements = [Statement(text) for text in split_script(sql)]

        def run(conn: _Connection) -> ImportSummary:
            before = conn.conn.total_changes
            results = conn.run_transaction(statements, limits, in_batch=True, defer_foreign_keys=True)
            return ImportSummary(len(results), conn.conn.total_changes - before)

        async with self._use(database) as db:
            return await self._write(db, run)


def _info(name: str, path: Path) -> DatabaseInfo:
    size = path.stat().st_size
    with contextlib.suppress(FileNotFoundError):
        size += Path(f"{path}-wal").stat().st_size
    return DatabaseInfo(name=name, size_bytes=size)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
