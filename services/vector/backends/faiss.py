"""The default backend: FAISS in process, one directory per index under data_dir/vector."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from services.runtime.errors import AlreadyExists, NotFound
from services.vector.backends import faiss_storage as storage
from services.vector.backends.faiss_batching import MicroBatcher
from services.vector.backends.faiss_index import FaissIndex, SearchRequest, single_threaded
from services.vector.config import VectorSettings
from services.vector.filters import Filter
from services.vector.model import (
    IndexInfo,
    IndexSpec,
    Match,
    Page,
    Vector32,
    VectorBatch,
    VectorKey,
    VectorRecord,
    WriteResult,
)

log = logging.getLogger("strata.vector.faiss")
T = TypeVar("T")
READ_THREADS = 4
WRITE_THREADS = 32
# Huge-page upkeep per maintenance tick: steps of 16 MiB (~12 ms each, writes go on between them).
TIDY_STEP_BYTES = 16 * 1024 * 1024
TIDY_STEPS_PER_TICK = 16


class FaissBackend:
    def __init__(self, settings: VectorSettings) -> None:
        self.settings = settings
        self.root = settings.data_dir / "vector" / "indexes"
        self._indexes: dict[str, FaissIndex] = {}
        self._batchers: dict[str, MicroBatcher[SearchRequest, list[Match]]] = {}
        self._catalog = threading.Lock()
        self._snapshot_task: asyncio.Task[None] | None = None
        # Separate pools: writers queued for group commit wait on a lock while holding a thread,
        # and must never leave searches without one.
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vector-read")
        self._writers = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="vector-write")
        # Indexes keep their storage on huge pages (`faiss_memory.HugePages`), glibc's tunable or not.
        self._madvise = settings.huge_pages_on

    async def _read(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._readers, fn, *args)

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writers, fn, *args)

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        single_threaded()
        await asyncio.to_thread(self._load_all)
        self._snapshot_task = asyncio.create_task(self._maintenance_loop())

    def _load_all(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)  # an interrupted create or delete
                continue
            started = time.perf_counter()
            index = FaissIndex(storage.read_spec(path), path, huge_pages=self._madvise)
            replayed = index.load()
            self._add(index)
            log.info(
                "index loaded",
                extra={
                    "index": path.name,
                    "vectors": index.info().vector_count,
                    "replayed": replayed,
                    "seconds": round(time.perf_counter() - started, 3),
                },
            )

    def _add(self, index: FaissIndex) -> None:
        self._indexes[index.spec.name] = index
        self._batchers[index.spec.name] = MicroBatcher(
            index.search_many,
            self.settings.query_batch_window_ms / 1000,
            self.settings.query_batch_max,
            self._readers,
        )

    async def close(self) -> None:
        if self._snapshot_task is not None:
            self._snapshot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._snapshot_task
        for index in list(self._indexes.values()):
            await asyncio.to_thread(self._snapshot_and_close, index)
        self._readers.shutdown(wait=False)
        self._writers.shutdown(wait=False)

    @staticmethod
    def _snapshot_and_close(index: FaissIndex) -> None:
        try:
            index.snapshot()
        finally:
            index.close()

    async def healthy(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK)

    async def _maintenance_loop(self) -> None:
        """Each tick: huge-page upkeep, then a snapshot of every index that is due one."""
        settings = self.settings
        tick = min(1.0, settings.snapshot_interval_seconds / 2)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for index in list(self._indexes.values()):
                try:
                    for _ in range(TIDY_STEPS_PER_TICK):
                        if not await asyncio.to_thread(index.tidy_memory, TIDY_STEP_BYTES):
                            break
                except Exception:  # a performance hint only: it must never stop the snapshots below
                    log.exception("huge-page upkeep failed", extra={"index": index.spec.name})
                due = index.needs_snapshot(
                    now, settings.snapshot_interval_seconds, settings.wal_max_bytes, settings.wal_max_entries
                )
                if due:
                    try:
                        await asyncio.to_thread(index.snapshot)
                    except Exception:
                        log.exception("snapshot failed", extra={"index": index.spec.name})

    # ---- indexes ---------------------------------------------------------------------

    def _get(self, name: str) -> FaissIndex:
        index = self._indexes.get(name)
        if index is None:
            raise NotFound(f"index {name!r} does not exist", reason="INDEX_NOT_FOUND", metadata={"index": name})
        return index

    async def create_index(self, spec: IndexSpec) -> IndexInfo:
        return await asyncio.to_thread(self._create, spec)

    def _create(self, spec: IndexSpec) -> IndexInfo:
        with self._catalog:
            if spec.name in self._indexes:
                raise AlreadyExists(
                    f"index {spec.name!r} already exists", reason="INDEX_EXISTS", metadata={"index": spec.name}
                )
            staging = self.root / f".creating-{uuid.uuid4().hex}"
            staging.mkdir(parents=True)
            storage.write_atomically(staging / storage.SPEC_FILE, _spec_bytes(spec))
            final = self.root / spec.name
            os.rename(staging, final)
            storage.fsync_dir(self.root)
            index = FaissIndex(spec, final, huge_pages=self._madvise)
            index.load()
            self._add(index)
            return index.info()

    async def describe(self, name: str) -> IndexSpec:
        return self._get(name).spec

    async def get_index(self, name: str) -> IndexInfo:
        return self._get(name).info()

    async def list_indexes(self) -> list[IndexInfo]:
        return [self._indexes[name].info() for name in sorted(self._indexes)]

    async def delete_index(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)

    def _delete(self, name: str) -> None:
        # The catalog lock covers the rename too, so a create of the same name cannot race it.
        with self._catalog:
            index = self._get(name)
            del self._indexes[name]
            self._batchers.pop(name, None)
            with index.snapshot_lock():
                index.close()
                trash = self.root / f".deleting-{uuid.uuid4().hex}"
                os.rename(index.directory, trash)
                storage.fsync_dir(self.root)
        shutil.rmtree(trash, ignore_errors=True)

    # ---- vectors ---------------------------------------------------------------------

    async def write(self, name: str, batch: VectorBatch, *, replace: bool) -> WriteResult:
        return await self._write(self._get(name).write, batch, replace)

    async def query(
        self,
        name: str,
        vector: Vector32,
        top_k: int,
        *,
        where: Filter | None,
        namespace: str | None,
        include_values: bool,
        include_metadata: bool,
    ) -> list[Match]:
        index = self._get(name)
        request = SearchRequest(vector, top_k, include_values, include_metadata)
        if where is None and namespace is None:
            return await self._batchers[name].submit(request)
        return await self._read(index.search_filtered, request, where, namespace)

    async def get_by_ids(self, name: str, keys: list[VectorKey]) -> list[VectorRecord]:
        return await self._read(self._get(name).get_keys, keys)

    async def get_by_filter(self, name: str, where: Filter, namespace: str | None, limit: int) -> list[VectorRecord]:
        return await self._read(self._get(name).get_matching, where, namespace, limit)

    async def delete_by_ids(self, name: str, keys: list[VectorKey]) -> WriteResult:
        return await self._write(self._get(name).delete_keys, keys)

    async def delete_by_filter(self, name: str, where: Filter, namespace: str | None) -> WriteResult:
        return await self._write(self._get(name).delete_matching, where, namespace)

    async def list_vectors(
        self,
        name: str,
        *,
        namespace: str | None,
        where: Filter | None,
        after: VectorKey | None,
        limit: int,
        include_values: bool,
        include_metadata: bool,
    ) -> Page:
        index = self._get(name)
        return await self._read(index.list_page, namespace, where, after, limit, include_values, include_metadata)


def _spec_bytes(spec: IndexSpec) -> bytes:
    import json

    return json.dumps(storage.spec_to_json(spec), indent=2).encode()
