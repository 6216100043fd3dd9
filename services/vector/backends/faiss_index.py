"""One FAISS index in memory, with its log and snapshots.

Concurrency: writes go through a two-stage pipeline. `_writer` (a mutex) serialises the
first stage: planning every queued write and appending them to the log with one fsync
(writes queued meanwhile share the next fsync: group commit). `_applier` serialises the
second: the in-memory apply, in log order. A group takes `_applier` before it lets go of
`_writer`, so the next group plans and logs while this one applies; its plans see the
applying group's changes through an overlay (`_Pending`). A snapshot's capture holds both
(the file is then written while writes go on: `faiss_snapshot`). Only the short in-memory
apply (FAISS add plus the id maps) holds `_rw` exclusively, so searches wait for at most one
apply and never for a disk write, and a reader never sees half a batch. Searches
hold `_rw` shared while they search AND while they turn FAISS ids into records, so results
and records always come from the same state.

Internal int64 ids are never reused: an upsert of an existing key gets a new id and the old
one becomes a tombstone. Flat searches over-fetch past tombstones and drop them (keeping the
BLAS path); a flat index removes them in bulk on a copy (`_compact_if_due`). HNSW cannot
remove, so its tombstones stay, excluded by an ID selector.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from services.runtime.errors import FailedPrecondition, NotFound, StrataError, Unavailable
from services.vector import filters
from services.vector.backends import faiss_snapshot as snapshots
from services.vector.backends import faiss_storage as storage
from services.vector.backends.faiss_locks import ReadWriteLock
from services.vector.backends.faiss_memory import Capacity, HugePages
from services.vector.backends.faiss_order import KeyOrder
from services.vector.backends.faiss_postings import Postings
from services.vector.backends.faiss_records import Key, Record, parsed, stored_keys, texts_of
from services.vector.backends.faiss_values import Captured, ValueFiles
from services.vector.filters import Filter
from services.vector.model import (
    IndexInfo,
    IndexSpec,
    IndexType,
    Match,
    Metadata,
    Metric,
    Page,
    Vector32,
    VectorBatch,
    VectorKey,
    VectorRecord,
    WriteResult,
    make_key,
    norms_outside_float32,
)

log = logging.getLogger("strata.vector.faiss")

# Below this many candidates an HNSW filtered query is answered exactly over the candidates:
# graph search with a very selective selector may find fewer than top_k of them.
HNSW_EXACT_BELOW = 20_000
# Measured on 100k x 384, one thread: BLAS costs ~28 ms however few the queries, while a scan per
# query costs ~5.5 ms on huge pages (~7 ms without); BLAS wins from about 7 queries on.
BLAS_FROM_BATCH = 7
HNSW_ADD_CHUNK = 64
# A flat index drops tombstoned vectors once there are this many, or 1/COMPACT_FRACTION of it.
COMPACT_MIN_TOMBSTONES = 1024
COMPACT_FRACTION = 100
# Most vectors replayed from the log in one FAISS add.
REPLAY_RUN = 50_000
# Rows of callers' values a snapshot reads per hold of the read lock (~0.75 MB at 384 dimensions).
VALUES_PER_READ = 512


@dataclass(frozen=True)
class SearchRequest:
    vector: Vector32
    top_k: int
    include_values: bool
    include_metadata: bool


# A write's plan: its log entry and result given what it sees, and for an upsert the entry's
# values as FAISS takes them when the writer prepared them before queueing (None: prepare them).
_Plan = Callable[["_Pending", int], tuple[storage.LogEntry, WriteResult, Vector32 | None]]


class _Ticket:
    """One queued write: its plan, then its result or error once a group commit ran it."""

    __slots__ = ("error", "plan", "result", "taken")

    def __init__(self, plan: _Plan) -> None:
        self.plan = plan
        self.taken = False  # a group holds it: its outcome is known once that group is applied
        self.result: WriteResult | None = None
        self.error: BaseException | None = None


Changes = dict[VectorKey, Metadata | None]


class _Pending:
    """What a write being planned sees beyond the applied state: keys written earlier in its
    own group, then those of the group still applying (key -> metadata, or None if deleted)."""

    def __init__(self, by_key: dict[Key, int], applying: Changes | None) -> None:
        self.by_key = by_key
        self.applying = applying or {}
        self.changes: Changes = {}

    def exists(self, key: VectorKey) -> bool:
        if key in self.changes:
            return self.changes[key] is not None
        if key in self.applying:
            return self.applying[key] is not None
        return key in self.by_key


@dataclass
class _Planned:
    ticket: _Ticket
    entry: storage.LogEntry
    vectors: Vector32 | None  # what FAISS gets for an upsert (normalised for cosine)


def _new_faiss_index(spec: IndexSpec) -> Any:
    metric = faiss.METRIC_L2 if spec.metric is Metric.EUCLIDEAN else faiss.METRIC_INNER_PRODUCT
    inner: Any
    if spec.index_type is IndexType.HNSW:
        assert spec.hnsw is not None
        inner = faiss.IndexHNSWFlat(spec.dimensions, spec.hnsw.m, metric)
        inner.hnsw.efConstruction = spec.hnsw.ef_construction
        inner.hnsw.efSearch = spec.hnsw.ef_search
    elif metric == faiss.METRIC_L2:
        inner = faiss.IndexFlatL2(spec.dimensions)
    else:
        inner = faiss.IndexFlatIP(spec.dimensions)
    return faiss.IndexIDMap2(inner)


_thread = threading.local()


def single_threaded() -> None:
    """One OpenMP thread for FAISS calls made by this thread.

    The setting is per thread: worker threads start with one OpenMP thread per core, and
    on a small busy machine two spinning OpenMP threads make a search several times slower.
    Requests already run in parallel on separate threads. Set once per thread: every FAISS
    call lets go of the GIL, and getting it back can wait behind other threads."""
    if not getattr(_thread, "single", False):
        faiss.omp_set_num_threads(1)
        _thread.single = True


def _normalised(values: Vector32) -> Vector32:
    """Each row scaled to unit length. FAISS computes the norm in float32: a row whose sum of
    squares overflows (values past ~1e19) came out all zeros, and one whose sum underflows or is
    subnormal (values under ~1e-19) came out unscaled, so cosine scores against them were
    wrong. Those few rows are scaled in float64, which holds every float32's square."""
    out = np.array(values, dtype=np.float32, copy=True)
    outside = norms_outside_float32(out)
    faiss.normalize_L2(out)
    if outside.any():
        rows = np.asarray(values)[outside].astype(np.float64)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        out[outside] = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    return out


class FaissIndex:
    def __init__(self, spec: IndexSpec, directory: Path, *, huge_pages: bool = True) -> None:
        self.spec = spec
        self.directory = directory
        self.closed = False
        self._failure: BaseException | None = None
        self._writer = threading.Lock()
        self._applier = threading.Lock()
        self._applying: Changes | None = None  # the changes of the group applying now
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._snapshotting = threading.Lock()
        self._rw = ReadWriteLock()
        self._index = _new_faiss_index(spec)
        self._huge_pages = HugePages(huge_pages)  # touched only by the thread holding `_applier` (or loading)
        self._capacity = Capacity()  # likewise
        self._records: dict[int, Record] = {}  # see `faiss_records`
        # While a snapshot is written: the records deleted since its capture, by internal id.
        self._graveyard: dict[int, Record] | None = None
        # Cosine: where the log or snapshot holds the caller's values (FAISS holds them
        # normalised); other metrics read FAISS.
        self._raw = ValueFiles(spec.dimensions) if spec.metric is Metric.COSINE else None
        self._by_key: dict[Key, int] = {}
        self._namespaces: dict[str, set[int]] = {}
        self._postings = Postings()
        self._dead: set[int] = set()
        # Internal ids [start, stop) added to the HNSW graph but not yet published.
        self._hidden: tuple[int, int] | None = None
        self._next_id = 0
        self.last_mutation_id = 0  # applied
        self._logged_mutation_id = 0
        self._order = KeyOrder()
        self._log: storage.LogWriter | None = None

    # ---- lifecycle -------------------------------------------------------------------

    def load(self) -> int:
        """Load the snapshot, replay the log after it; returns the number of entries replayed."""
        snapshot = self.directory / storage.SNAPSHOT_FILE
        if snapshot.exists():
            self._restore(snapshots.read(snapshot))
        replayed = 0
        run: list[storage.LogEntry] = []
        run_keys: set[VectorKey] = set()
        for entry in storage.replay_log(self.directory, self.spec.dimensions):
            if entry.mutation_id <= self.last_mutation_id:
                continue  # a snapshot already holds it (crash between snapshot and log cleanup)
            replayed += 1
            # Consecutive upserts of distinct keys are applied as one (same ids, same result):
            # a log of 10k single-vector writes then costs a few FAISS adds, not 10k.
            if entry.op != "upsert" or not run_keys.isdisjoint(entry.keys) or len(run_keys) >= REPLAY_RUN:
                self._apply_run(run)
                run, run_keys = [], set()
            if entry.op == "upsert":
                run.append(entry)
                run_keys.update(entry.keys)
            else:
                self._apply(entry)
        self._apply_run(run)
        self._compact_if_due()
        self._huge_pages.collapse(self._index)
        self._logged_mutation_id = self.last_mutation_id
        self._log = storage.LogWriter(self.directory, self.last_mutation_id + 1)
        self._log.entries = replayed
        if replayed:
            self._log.first_entry_time = time.monotonic()
        return replayed

    def _apply_run(self, run: list[storage.LogEntry]) -> None:
        if len(run) == 1:
            self._apply(run[0])
        elif run:
            merged = storage.LogEntry(
                run[-1].mutation_id,
                "upsert",
                [key for entry in run for key in entry.keys],
                np.concatenate([entry.values for entry in run if entry.values is not None]),
                [metadata for entry in run for metadata in entry.metadata or ()],
                values_at=[at for entry in run for at in entry.values_at or ()],
            )
            self._apply(merged)

    def snapshot_lock(self) -> threading.Lock:
        """Held while a snapshot is written; hold it to move the index's directory safely."""
        return self._snapshotting

    def close(self) -> None:
        with self._writer, self._applier:
            self.closed = True
            if self._log is not None:
                self._log.close()
            if self._raw is not None:
                with self._rw.write():
                    self._raw.close()

    def _live(self) -> None:
        if self.closed:
            raise NotFound(f"index {self.spec.name!r} does not exist", reason="INDEX_NOT_FOUND")
        if self._failure is not None:
            raise Unavailable(
                f"index {self.spec.name!r} failed a write ({self._failure!r}); restart the service",
                reason="INDEX_FAILED",
            )

    # ---- writes ----------------------------------------------------------------------

    def write(self, batch: VectorBatch, replace: bool) -> WriteResult:
        # Normalising (a copy of the batch) and the log frame happen here, in the caller's
        # thread, not in the group commit that every write queues for.
        prepared = self._prepare(batch.values)
        framed = storage.frame_ahead("upsert", batch.keys, batch.values, batch.metadata_json)

        def plan(pending: _Pending, mutation_id: int) -> tuple[storage.LogEntry, WriteResult, Vector32 | None]:
            skipped = [] if replace else [key for key in batch.keys if pending.exists(key)]
            if not skipped:  # every vector is written: the batch's own lists, no copies
                pending.changes.update(zip(batch.keys, batch.metadata, strict=True))
                entry = storage.LogEntry(
                    mutation_id, "upsert", batch.keys, batch.values, batch.metadata, batch.metadata_json, framed=framed
                )
                return entry, WriteResult(mutation_id, len(batch.keys), []), prepared
            keep = [i for i, key in enumerate(batch.keys) if not pending.exists(key)]
            for i in keep:
                pending.changes[batch.keys[i]] = batch.metadata[i]
            entry = storage.LogEntry(
                mutation_id,
                "upsert",
                [batch.keys[i] for i in keep],
                batch.values[keep],
                [batch.metadata[i] for i in keep],
                [batch.metadata_json[i] for i in keep],
            )
            return entry, WriteResult(mutation_id, len(keep), skipped), prepared[keep]

        return self._submit(plan)

    def delete_keys(self, keys: list[VectorKey]) -> WriteResult:
        def plan(pending: _Pending, mutation_id: int) -> tuple[storage.LogEntry, WriteResult, None]:
            present = [key for key in dict.fromkeys(keys) if pending.exists(key)]
            for key in present:
                pending.changes[key] = None
            return storage.LogEntry(mutation_id, "delete", present), WriteResult(mutation_id, len(present)), None

        return self._submit(plan)

    def delete_matching(self, where: Filter, namespace: str | None) -> WriteResult:
        def plan(pending: _Pending, mutation_id: int) -> tuple[storage.LogEntry, WriteResult, None]:
            # Once the applying group is done, nothing mutates but this thread, so reading the
            # maps without `_rw` is consistent.
            self._settle()
            found = {self._records[i][0] for i in self._candidates(where, namespace)}
            for key, metadata in pending.changes.items():
                found.discard(key)
                if metadata is not None and namespace in (None, key.namespace) and filters.matches(where, metadata):
                    found.add(key)
            keys = list(map(make_key, sorted(found)))
            for key in keys:
                pending.changes[key] = None
            return storage.LogEntry(mutation_id, "delete", keys), WriteResult(mutation_id, len(keys)), None

        return self._submit(plan)

    def _submit(self, plan: _Plan) -> WriteResult:
        """Group commit, pipelined: whoever holds `_writer` logs every queued write with one
        fsync, then applies them under `_applier` while the next group is planned and logged.

        A writer queues its plan, then waits for `_writer`; the holder plans every queued
        write in order (each sees the effects of those before it), appends them all, fsyncs
        once, takes `_applier` (so groups apply in log order), lets go of `_writer`, and
        applies them one by one. A writer whose ticket another holder took waits for
        `_applier`: when it gets it, that group has been applied. Concurrent single-vector
        writes thus share fsyncs, and a batch's apply overlaps the next batch's log write.
        """
        ticket = _Ticket(plan)
        with self._queue_lock:
            self._queue.append(ticket)
        self._writer.acquire()
        if ticket.taken:
            self._writer.release()
            self._settle()  # the group holding the ticket took `_applier` before releasing `_writer`
        else:
            with self._queue_lock:
                group, self._queue = self._queue, []
            planned: list[_Planned] = []
            changes: Changes | None = None
            try:
                for queued in group:
                    queued.taken = True
                planned, changes = self._log_group(group)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller in the group, and logged
                self._fail(group, exc)
            finally:
                self._applier.acquire()
                self._applying = changes  # what the next group's plans see until this one is applied
                self._writer.release()
            try:
                if planned:
                    self._apply_group(planned)
            except BaseException as exc:  # noqa: BLE001 - handed to every caller in the group, and logged
                self._fail(group, exc)
            finally:
                self._applying = None
                self._applier.release()
        if ticket.error is not None:
            raise ticket.error
        assert ticket.result is not None
        return ticket.result

    def _fail(self, group: list[_Ticket], exc: BaseException) -> None:
        """The log or memory may now disagree with what callers were told: refuse further
        writes until a restart replays the log."""
        if self._failure is None:
            self._failure = exc
        log.exception("write failed; the index refuses writes until restarted")
        for queued in group:
            if queued.error is None:
                queued.error, queued.result = exc, None

    def _settle(self) -> None:
        """Wait until the group applying now (if any) is applied; with `_writer` held, that is
        every logged write."""
        with self._applier:
            pass

    def _log_group(self, group: list[_Ticket]) -> tuple[list[_Planned], Changes]:
        """Plan the group's writes and make them durable (the caller holds `_writer`); the
        planned writes, and the keys they change."""
        assert self._log is not None
        pending = _Pending(self._by_key, self._applying)
        planned: list[_Planned] = []
        mutation_id = self._logged_mutation_id
        for ticket in group:
            try:
                self._live()
                entry, ticket.result, vectors = ticket.plan(pending, mutation_id + 1)
            except StrataError as exc:
                ticket.error = exc
                continue
            mutation_id += 1
            planned.append(_Planned(ticket, entry, vectors))
        if planned:
            self._log.append([item.entry for item in planned], time.monotonic())
            self._logged_mutation_id = mutation_id
        return planned, pending.changes

    def _apply_group(self, planned: list[_Planned]) -> None:
        """Apply a logged group in order (the caller holds `_applier`)."""
        self._live()  # an earlier group failed to apply: memory is not to be trusted
        for item in planned:
            self._apply(item.entry, item.vectors)
        self._compact_if_due()

    def _compact_if_due(self) -> None:
        """Drop tombstoned vectors from a flat index (the caller holds `_writer`).

        `remove_ids` costs O(N) whatever the number of ids, so removals wait for a batch of
        them, and run on a copy: readers keep searching the current index (only this thread
        mutates it) and the swap is the only exclusive step. HNSW cannot remove: its
        tombstones stay, excluded by an ID selector."""
        if self.spec.index_type is IndexType.HNSW:
            return
        if len(self._dead) <= max(COMPACT_MIN_TOMBSTONES, self._index.ntotal // COMPACT_FRACTION):
            return
        single_threaded()
        gone = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
        compacted = faiss.clone_index(self._index)
        compacted.remove_ids(faiss.IDSelectorBatch(gone))
        with self._rw.write():
            self._index = compacted
            self._dead.difference_update(gone.tolist())
        self._huge_pages.collapse(compacted)  # new storage, written at once: convert it now

    def _apply(self, entry: storage.LogEntry, vectors: Vector32 | None = None) -> None:
        """Make a logged mutation visible; the exclusive section holds no I/O. `vectors` are
        the entry's values as FAISS takes them, when already prepared."""
        by_key = self._by_key
        old = [by_key[key] for key in by_key.keys() & entry.keys]  # the set intersection runs in C
        new_ids = None
        if entry.op == "upsert":
            assert entry.values is not None and entry.metadata is not None
            # Not np.arange: filling an array lets go of the GIL, and this runs where every other
            # write waits (see `faiss_memory._Arrays`).
            new_ids = np.fromiter(range(self._next_id, self._next_id + len(entry.keys)), np.int64, len(entry.keys))
            if vectors is None:
                vectors = self._prepare(entry.values)
        single_threaded()
        if new_ids is not None:  # room is made here; readers wait only while a buffer moves
            self._capacity.reserve(self._index, len(new_ids), self._rw.write)
            if self._raw is not None:  # and the files the values are read back from opened
                assert entry.values_at is not None, "an upsert is applied once logged"
                self._raw.hold(path for _, path, _ in entry.values_at)
        added = False
        if new_ids is not None and self.spec.index_type is IndexType.HNSW and len(new_ids) > HNSW_ADD_CHUNK:
            # HNSW inserts cost ~0.5 ms each: add in chunks, letting searches in between. The
            # new ids stay hidden (excluded by the selector, unknown to the maps) until the final
            # swap below, so readers still see the batch all at once.
            with self._rw.write():
                self._hidden = (int(new_ids[0]), int(new_ids[-1]) + 1)
            for start in range(0, len(new_ids), HNSW_ADD_CHUNK):
                with self._rw.write():
                    self._index.add_with_ids(
                        np.ascontiguousarray(vectors[start : start + HNSW_ADD_CHUNK], dtype=np.float32),  # type: ignore[index]
                        new_ids[start : start + HNSW_ADD_CHUNK],
                    )
            added = True
        keys = stored_keys(entry.keys) if entry.op == "upsert" else []
        with self._rw.write():
            self._hidden = None
            if old and self._order.tracking:
                present = [self._records[internal][0] for internal in old]
                if entry.op == "upsert":  # replaced keys stay; only the others are new
                    self._order.changed(added=set(keys).difference(present))
                else:
                    self._order.changed(removed=present)
            elif entry.op == "upsert":
                self._order.changed(added=keys)
            if old:
                self._dead.update(old)
                for internal in old:
                    record = self._records.pop(internal)
                    if self._graveyard is not None:  # a snapshot being written still needs it
                        self._graveyard[internal] = record
                    key, text = record
                    del self._by_key[key]
                    members = self._namespaces[key[0]]
                    members.discard(internal)
                    if not members:
                        del self._namespaces[key[0]]
                    self._postings.remove(internal, parsed(text))
            if new_ids is not None and len(new_ids):
                assert entry.values is not None and entry.metadata is not None
                if not added:
                    self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), new_ids)
                internals = new_ids.tolist()
                # Bulk `update`s, no loop per vector.
                if self._raw is not None and entry.values_at is not None:
                    first = internals[0]
                    for rows, path, offset in entry.values_at:
                        self._raw.add_logged(first, rows, path, offset)
                        first += rows
                texts = entry.metadata_json if entry.metadata_json is not None else texts_of(entry.metadata)
                self._records.update(zip(internals, zip(keys, texts, strict=True), strict=True))
                self._by_key.update(zip(keys, internals, strict=True))
                namespaces = {key.namespace for key in entry.keys}
                if len(namespaces) == 1:
                    self._namespaces.setdefault(namespaces.pop(), set()).update(internals)
                else:
                    for internal, key in zip(internals, entry.keys, strict=True):
                        self._namespaces.setdefault(key.namespace, set()).add(internal)
                self._postings.add_many(internals, entry.metadata)
                self._next_id += len(new_ids)
            self.last_mutation_id = entry.mutation_id
        if new_ids is not None and len(new_ids):
            self._huge_pages.advise(self._index)  # cheap; `tidy_memory` collapses what is already written

    # ---- maintenance -----------------------------------------------------------------

    def tidy_memory(self, limit: int) -> bool:
        """Move up to `limit` bytes of recently written vectors to huge pages, unless a write is
        running (it never waits for one). True when it did and more remains."""
        if not self._huge_pages.pending() or not self._applier.acquire(blocking=False):
            return False
        try:
            if not self.closed:
                self._huge_pages.collapse(self._index, limit)
        finally:
            self._applier.release()
        return bool(self._huge_pages.pending())

    # ---- snapshots -------------------------------------------------------------------

    def needs_snapshot(self, now: float, interval: float, max_bytes: int, max_entries: int) -> bool:
        log_ = self._log
        if log_ is None or self.closed or not log_.entries:
            return False
        started = log_.first_entry_time or now
        return log_.bytes >= max_bytes or log_.entries >= max_entries or now - started >= interval

    def snapshot(self) -> bool:
        """Write the state atomically and drop the log it covers; False if nothing to do.
        Writes wait only for the capture (see `faiss_snapshot`), not for the O(N) rest."""
        with self._snapshotting:
            room = None
            if self.spec.index_type is IndexType.HNSW and self._log is not None and self._log.entries:
                room = snapshots.graph_room(self._index, self._rw.read)
            with self._writer, self._applier:
                if self.closed or self._log is None or not self._log.entries:
                    return False
                # Writes wait while the ids are listed (~5 ms at 1M vectors, where copying the
                # records dict took ~30); the records themselves are read as the file is written,
                # those deleted meanwhile from where deletes leave them until it is done.
                graveyard: dict[int, Record] = {}
                captured = snapshots.capture(
                    mutation_id=self.last_mutation_id,
                    next_id=self._next_id,
                    ids=list(self._records),
                    records=self._records_as_captured(graveyard),
                    dead=self._dead,
                    index=self._index,
                    values=None if self._raw is None else self._values_of(self._raw.capture()),
                    hnsw=self.spec.index_type is IndexType.HNSW,
                    room=room,
                )
                self._log.rotate(self.last_mutation_id + 1)
                self._log.reset_counters()
                self._graveyard = graveyard
            path = self.directory / storage.SNAPSHOT_FILE
            written: list[snapshots.Written] = []
            try:
                storage.write_atomically(
                    path, lambda out: written.append(snapshots.write(captured, out, read_lock=self._rw.read))
                )
            finally:
                with self._rw.write():
                    self._graveyard = None
            with self._writer:
                if not self.closed and self._log is not None:
                    if self._raw is not None:  # the values now come from the snapshot, before its logs go
                        with self._rw.write():
                            self._raw.replace_before(captured.next_id, path, written[0].ids, written[0].offset)
                    self._log.forget_before_current()
            return True

    def _records_as_captured(self, graveyard: dict[int, Record]) -> Callable[[list[int]], list[Record]]:
        """Reads records of internal ids a capture listed: from the live dict, or for those
        deleted since, from `graveyard` (ids are never reused, so a live id holds its record as
        captured). A read lock per piece keeps a delete from falling between the two."""

        def read(ids: list[int]) -> list[Record]:
            with self._rw.read():
                found = list(map(self._records.get, ids))
                if None in found:
                    found = [graveyard[i] if record is None else record for i, record in zip(ids, found, strict=True)]
                return found  # type: ignore[return-value]

        return read

    def _values_of(self, captured: Captured) -> Callable[[np.ndarray], np.ndarray]:
        """Reads the caller's values of increasing internal ids from runs `ValueFiles.capture`
        returned (their files stay open until the snapshot is written), a short step at a time
        under the read lock, so that writes wait at most for one step."""

        def read(internal: np.ndarray) -> np.ndarray:
            assert self._raw is not None
            out = np.empty((len(internal), self.spec.dimensions), dtype=np.float32)
            for start in range(0, len(internal), VALUES_PER_READ):
                with self._rw.read():
                    if self.closed:
                        raise RuntimeError(f"index {self.spec.name!r} closed while a snapshot was written")
                    step = internal[start : start + VALUES_PER_READ]
                    out[start : start + VALUES_PER_READ] = self._raw.read(step, captured)
            return out

        return read

    def _restore(self, state: dict[str, Any]) -> None:
        if state.get("format") not in snapshots.READABLE_FORMATS:
            raise RuntimeError(f"{self.directory}: unknown snapshot format {state.get('format')!r}")
        raw = state["raw"]
        on_disk = state["format"] >= 5 and state.get("raw_offset") is not None
        internal = np.fromiter((record[0] for record in state["records"]), dtype=np.int64, count=len(state["records"]))
        if raw is not None and np.any(internal[1:] <= internal[:-1]):  # snapshots list records by id
            order = np.argsort(internal, kind="stable")
            internal, raw, on_disk = internal[order], raw[order], False
        if state["index"] is not None:
            self._index = state["index"]
        else:  # a flat index kept as its vectors: add them back, in id order
            for start in range(0, len(internal), REPLAY_RUN):
                rows = slice(start, start + REPLAY_RUN)
                self._index.add_with_ids(self._prepare(raw[rows]), internal[rows])
        if self.spec.index_type is IndexType.HNSW:
            assert self.spec.hnsw is not None
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.spec.hnsw.ef_search  # type: ignore[attr-defined]
        if self._raw is not None and len(internal):
            if on_disk:  # format 5: read back from the file when asked for
                self._raw.add_snapshot(internal, self.directory / storage.SNAPSHOT_FILE, state["raw_offset"])
            else:
                self._raw.add_rows(internal, np.ascontiguousarray(raw, dtype=np.float32))
        records = state["records"]
        if state["format"] < 4:  # metadata kept as dicts
            metadata = [record[3] or {} for record in records]
            texts = texts_of(metadata)
        else:
            texts = [record[3] for record in records]
            metadata = list(map(parsed, texts))
        for (internal_id, namespace, vid, _), text in zip(records, texts, strict=True):
            key = (namespace, vid)
            self._records[internal_id] = (key, text)
            self._by_key[key] = internal_id
            self._namespaces.setdefault(namespace, set()).add(internal_id)
        # Postings are rebuilt rather than read (formats 3 and 4 have none; older ones' are ignored).
        self._postings.add_many([record[0] for record in records], metadata)
        self._dead = set(state["dead"])
        self._next_id = state["next_id"]
        self.last_mutation_id = state["mutation_id"]

    # ---- reads -----------------------------------------------------------------------

    def info(self) -> IndexInfo:
        with self._rw.read():
            return IndexInfo(self.spec, len(self._records), self.last_mutation_id)

    def _candidates(self, where: Filter | None, namespace: str | None) -> set[int]:
        """Ids allowed by a namespace and a filter (at least one of them is set)."""
        scope: set[int] | None = None
        if namespace is not None:
            scope = self._namespaces.get(namespace, set())
        if where is None:
            assert scope is not None
            return scope
        universe = (lambda: scope) if scope is not None else (lambda: set(self._records))
        matched = self._postings.evaluate(where, universe)  # type: ignore[arg-type]
        return matched if scope is None else matched & scope

    def _values_many(self, internals: list[int]) -> list[Vector32]:
        """The values of these internal ids as callers sent them: FAISS holds them, except in a
        cosine index, which reads them from its files (rows near each other in one read)."""
        if self._raw is None:
            return [np.asarray(self._index.reconstruct(internal), dtype=np.float32) for internal in internals]
        if not internals:
            return []
        if self.closed:  # its files are closed
            raise NotFound(f"index {self.spec.name!r} does not exist", reason="INDEX_NOT_FOUND")
        distinct, where = np.unique(np.asarray(internals, dtype=np.int64), return_inverse=True)
        return list(self._raw.read(distinct)[where.reshape(-1)])

    def _to_records(self, internals: list[int], values: bool = True, metadata: bool = True) -> list[VectorRecord]:
        rows: list[Vector32 | None] = [*self._values_many(internals)] if values else [None] * len(internals)
        out = []
        for internal, row in zip(internals, rows, strict=True):
            key, text = self._records[internal]
            out.append(VectorRecord(make_key(key), row, parsed(text) if metadata else None))
        return out

    def _score(self, distance: float) -> float:
        if self.spec.metric is Metric.EUCLIDEAN:
            return float(np.sqrt(max(distance, 0.0)))
        return float(distance)

    def _matches(self, distances: Any, ids: Any, request: SearchRequest) -> list[Match]:
        found: list[tuple[int, float]] = []
        for distance, internal in zip(distances.tolist(), ids.tolist(), strict=True):
            if internal < 0 or internal not in self._records:
                continue
            found.append((internal, distance))
            if len(found) == request.top_k:
                break
        internals = [internal for internal, _ in found]
        rows = self._values_many(internals) if request.include_values else [None] * len(found)
        out = []
        for (internal, distance), row in zip(found, rows, strict=True):
            key, text = self._records[internal]
            fields = parsed(text) if request.include_metadata else None
            out.append(Match(make_key(key), self._score(distance), row, fields))
        return out

    def _prepare(self, vectors: Vector32) -> Vector32:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.spec.dimensions)
        return _normalised(vectors) if self.spec.metric is Metric.COSINE else vectors

    def _params(self, selector: Any) -> Any:
        if self.spec.index_type is IndexType.HNSW:
            assert self.spec.hnsw is not None
            return faiss.SearchParametersHNSW(efSearch=self.spec.hnsw.ef_search, sel=selector)  # type: ignore[attr-defined]
        return None if selector is None else faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]

    def _search(self, queries: Vector32, k: int, params: Any) -> tuple[Any, Any]:
        # FAISS switches to BLAS when queries x dimensions reaches this global threshold. BLAS has
        # a large fixed cost: a few queries are faster without it, a micro-batch of 7 or more with it.
        # (Global: two indexes of different dimensions searching at once may pick a slower path.)
        faiss.cvar.distance_compute_blas_threshold = BLAS_FROM_BATCH * self.spec.dimensions
        single_threaded()
        return self._index.search(queries, k, params=params)

    def _hnsw_exclusions(self) -> Any:
        """A selector that skips tombstones and ids still being added, or None."""
        excluded: list[Any] = []
        if self._dead:
            excluded.append(faiss.IDSelectorBatch(np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))))
        if self._hidden is not None:
            excluded.append(faiss.IDSelectorRange(*self._hidden))
        if not excluded:
            return None
        either = excluded[0] if len(excluded) == 1 else faiss.IDSelectorOr(excluded[0], excluded[1])
        return faiss.IDSelectorNot(either)  # faiss's wrappers keep the parts alive

    def search_many(self, requests: list[SearchRequest]) -> list[list[Match]]:
        """Unfiltered searches in one FAISS call (the micro-batch path)."""
        queries = self._prepare(np.stack([r.vector for r in requests]))
        with self._rw.read():
            if self.closed:
                raise NotFound(f"index {self.spec.name!r} does not exist", reason="INDEX_NOT_FOUND")
            live = len(self._records)
            if not live:
                return [[] for _ in requests]
            k = max(r.top_k for r in requests)
            selector = None
            if self.spec.index_type is IndexType.HNSW:
                k = min(k, live)
                selector = self._hnsw_exclusions()
            else:
                # Over-fetch past the tombstones instead of a selector, which would rule out BLAS.
                k = min(k + len(self._dead), self._index.ntotal)
            distances, ids = self._search(queries, k, self._params(selector))
            results = [self._matches(distances[i], ids[i], r) for i, r in enumerate(requests)]
            for i, request in enumerate(requests):
                if len(results[i]) < min(request.top_k, live):
                    # The graph walk came up short (most of it excluded): answer exactly.
                    everything = np.fromiter(self._records, dtype=np.int64, count=live)
                    results[i] = self._exact(queries[i : i + 1], everything, min(request.top_k, live), request)
            return results

    def search_filtered(self, request: SearchRequest, where: Filter | None, namespace: str | None) -> list[Match]:
        query = self._prepare(request.vector)
        with self._rw.read():
            if self.closed:
                raise NotFound(f"index {self.spec.name!r} does not exist", reason="INDEX_NOT_FOUND")
            if namespace is not None and namespace not in self._namespaces:
                raise NotFound(
                    f"namespace {namespace!r} does not exist in index {self.spec.name!r}",
                    reason="NAMESPACE_NOT_FOUND",
                    metadata={"index": self.spec.name, "namespace": namespace},
                )
            candidates = self._candidates(where, namespace)
            if not candidates:
                return []
            wanted = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
            k = min(request.top_k, len(wanted))
            if self.spec.index_type is IndexType.HNSW and len(wanted) < HNSW_EXACT_BELOW:
                return self._exact(query, wanted, k, request)
            selector = faiss.IDSelectorBatch(wanted)
            distances, ids = self._search(query, k, self._params(selector))
            found = self._matches(distances[0], ids[0], request)
            if len(found) < k:
                return self._exact(query, wanted, k, request)
            return found

    def _exact(self, query: Vector32, wanted: Any, k: int, request: SearchRequest) -> list[Match]:
        """Brute force over a candidate set: the fallback when a graph search comes up short."""
        single_threaded()
        stored = np.vstack([self._index.reconstruct(int(i)) for i in wanted]).astype(np.float32)
        if self.spec.metric is Metric.EUCLIDEAN:
            distances = faiss.pairwise_distances(query, stored)[0]
            order = np.argsort(distances, kind="stable")[:k]
        else:
            distances = (stored @ query[0]).astype(np.float32)
            order = np.argsort(-distances, kind="stable")[:k]
        return self._matches(distances[order], wanted[order], request)

    def get_keys(self, keys: list[VectorKey]) -> list[VectorRecord]:
        with self._rw.read():
            return self._to_records([self._by_key[key] for key in keys if key in self._by_key])

    def get_matching(self, where: Filter, namespace: str | None, limit: int) -> list[VectorRecord]:
        with self._rw.read():
            ids = self._candidates(where, namespace)
            if len(ids) > limit:
                raise FailedPrecondition(
                    f"the filter matches {len(ids)} vectors; GetVectors returns at most {limit}: "
                    "page through ListVectors instead",
                    reason="TOO_MANY_MATCHES",
                    metadata={"matches": str(len(ids)), "limit": str(limit)},
                )
            records = self._to_records(list(ids))
        records.sort(key=lambda r: r.key)
        return records

    def list_page(
        self,
        namespace: str | None,
        where: Filter | None,
        after: VectorKey | None,
        limit: int,
        include_values: bool,
        include_metadata: bool,
    ) -> Page:
        with self._rw.read():
            allowed = None if where is None else self._candidates(where, namespace)
            if allowed is not None and len(allowed) * 4 <= len(self._by_key):
                # Few matches: sort just them rather than walk the sorted list of every key.
                chosen = sorted(self._records[i][0] for i in allowed)
            else:
                chosen = self._order.keys(lambda: self._by_key)
            start = 0
            if namespace is not None:
                start = bisect.bisect_left(chosen, (namespace, ""))
            if after is not None:
                start = max(start, bisect.bisect_right(chosen, after))
            page: list[Key] = []
            for key in itertools.islice(chosen, start, None):
                if namespace is not None and key[0] != namespace:
                    break  # sorted by namespace first: the namespace's keys are behind us
                if allowed is not None and self._by_key[key] not in allowed:
                    continue
                page.append(key)
                if len(page) > limit:
                    break
            more = len(page) > limit
            out = self._to_records([self._by_key[k] for k in page[:limit]], include_values, include_metadata)
        return Page(out, out[-1].key if more and out else None)
