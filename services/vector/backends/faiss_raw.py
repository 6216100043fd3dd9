"""The values callers sent to a cosine index, by internal id.

FAISS holds cosine vectors normalised, so the caller's values are kept here to be given back
exactly. They live in chunks of rows, filled in order, beside the internal id of each row.
Internal ids only ever grow, so the ids run in increasing order and a row is found by binary
search: no per-vector dictionary to fill on every write, or to copy for a snapshot. Growing adds
a chunk and never copies the rows already held: one array doubled as it filled cost a copy of
every value at each doubling, with writes waiting (about a second at a million vectors), and
briefly three times the memory. Chunks start small, so a small index stays small, and stop
growing at CHUNK_BYTES. Once the last full-size chunk is half used the next one is made, and
faulted in on a background thread (`faiss_memory.populate_later`), so appends do not fault fresh
memory in while the index holds readers off. A replaced or deleted vector's row is only marked
forgotten; once forgotten rows outnumber live ones, `compact` copies the live rows into new
chunks, so memory follows the live vectors however much they churn. (Keeping each vector as a
view of the batch it came in would pin that whole batch for as long as any one of its vectors
lives.)

A row is never written twice: compacting makes new chunks. So a snapshot reads the rows it
captured without a lock or a copy, and a reader never sees a row change under it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from services.vector.backends.faiss_memory import populate_later

# Compact once forgotten rows are more than this many and outnumber the live ones.
COMPACT_MIN_ROWS = 4096
FIRST_CAPACITY = 1024
# Largest chunk of values (rows of more than this are a chunk each).
CHUNK_BYTES = 16 * 1024 * 1024

# What `capture` returns: the chunks of values, the first row of each, the id of each row
# (increasing), and how many rows count.
Captured = tuple[tuple[np.ndarray, ...], tuple[int, ...], np.ndarray, int]


def find_rows(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `wanted` sits in the increasing `ids`, and whether it is there at all."""
    if not len(ids):
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    rows = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return rows, ids[rows] == wanted


def _rows_of(ids: np.ndarray, internals: Any) -> np.ndarray:
    """The rows of internal ids that have one (a KeyError names the first that has none)."""
    wanted = np.asarray(internals, dtype=np.int64).reshape(-1)
    rows, found = find_rows(ids, wanted)
    if not found.all():
        raise KeyError(int(wanted[~found][0]))
    return rows


def _take(chunks: Sequence[np.ndarray], starts: Sequence[int], rows: np.ndarray) -> np.ndarray:
    """The values of `rows`, in that order, as one new array.

    Copied a chunk's run of rows at a time by `np.take` into the output (one copy, and numpy
    lets go of the GIL while it copies): boolean masks held the GIL for ~30 ms per 100k rows,
    stopping every write while a snapshot gathered its values."""
    out = np.empty((len(rows), chunks[0].shape[1] if chunks else 0), np.float32)
    if not len(rows):
        return out
    order = None
    if np.any(rows[1:] < rows[:-1]):  # snapshots ask in id order; anything else is sorted first
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
    target = out if order is None else np.empty_like(out)
    ends = [*np.searchsorted(rows, np.asarray(starts[1:], dtype=np.int64)).tolist(), len(rows)]
    first = 0
    for chunk, last in enumerate(ends):
        if last > first:
            np.take(chunks[chunk], rows[first:last] - starts[chunk], axis=0, out=target[first:last], mode="clip")
        first = last
    if order is not None:
        np.take(target, np.argsort(order), axis=0, out=out, mode="clip")
    return out


class RawValues:
    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions
        self._chunk_rows = max(FIRST_CAPACITY, CHUNK_BYTES // (4 * dimensions))
        self._chunks: list[np.ndarray] = []
        self._starts: list[int] = []  # first row of each chunk
        self._ids = np.empty(0, dtype=np.int64)  # internal id of each row, increasing
        self._live = np.empty(0, dtype=bool)  # False once forgotten
        self._used = 0  # rows written so far (live or forgotten)

    def __len__(self) -> int:
        """Live rows (counted: a few microseconds per 100k rows)."""
        return int(np.count_nonzero(self._live[: self._used]))

    def get(self, internal: int) -> np.ndarray:
        row = int(_rows_of(self._ids[: self._used], [internal])[0])
        if not self._live[row]:
            raise KeyError(internal)
        chunk = bisect.bisect_right(self._starts, row) - 1
        return self._chunks[chunk][row - self._starts[chunk]]

    def _capacity(self) -> int:
        """Rows the chunks hold."""
        return self._starts[-1] + len(self._chunks[-1]) if self._chunks else 0

    def reserve(self, count: int) -> None:
        """Room for `count` more rows. The caller holds the index's writer lock but need not
        hold readers off: rows stay where they are (new chunks; ids copied to bigger arrays)."""
        need = self._used + count
        if need > len(self._ids):
            capacity = max(2 * len(self._ids), need, FIRST_CAPACITY)
            ids = np.empty(capacity, np.int64)
            live = np.zeros(capacity, bool)
            ids[: self._used] = self._ids[: self._used]
            live[: self._used] = self._live[: self._used]
            self._ids, self._live = ids, live
        while (capacity := self._capacity()) < need:
            self._add_chunk(min(self._chunk_rows, max(FIRST_CAPACITY, capacity, need - capacity)))
        if self._chunks and len(self._chunks[-1]) == self._chunk_rows and capacity - need < self._chunk_rows // 2:
            self._add_chunk(self._chunk_rows)  # the next full-size chunk early, faulted in meanwhile

    def _add_chunk(self, rows: int) -> None:
        chunk = np.empty((rows, self._dimensions), np.float32)
        populate_later(chunk.ctypes.data, chunk.nbytes)
        self._starts.append(self._capacity())
        self._chunks.append(chunk)

    def add(self, internals: list[int], values: np.ndarray) -> None:
        """Append rows (after `reserve`), with readers held off. Ids must be greater than any
        added before, in increasing order."""
        start, stop = self._used, self._used + len(internals)
        ids = np.asarray(internals, dtype=np.int64)
        if len(ids) and ((start and ids[0] <= self._ids[start - 1]) or np.any(ids[1:] <= ids[:-1])):
            raise ValueError("internal ids must only grow")
        row = start
        chunk = bisect.bisect_right(self._starts, row) - 1
        while row < stop:
            base = self._starts[chunk]
            array = self._chunks[chunk]
            take = min(stop, base + len(array)) - row
            array[row - base : row - base + take] = values[row - start : row - start + take]
            row += take
            chunk += 1
        self._ids[start:stop] = ids
        self._live[start:stop] = True
        self._used = stop

    def forget(self, internals: Iterable[int]) -> None:
        """Mark rows forgotten (ids without a row are ignored), with readers held off."""
        rows, found = find_rows(self._ids[: self._used], np.fromiter(internals, dtype=np.int64))
        self._live[rows[found]] = False

    def compact(self, exclusive: Callable[[], AbstractContextManager[Any]]) -> bool:
        """Copy the live rows into new chunks when forgotten rows outnumber them; the copy is
        made while readers go on, and only the swap holds them off (`exclusive`)."""
        count = len(self)
        if self._used - count <= max(COMPACT_MIN_ROWS, count):
            return False
        keep = np.flatnonzero(self._live[: self._used])
        fresh = RawValues(self._dimensions)
        fresh.reserve(len(keep))
        for first in range(0, len(keep), self._chunk_rows):  # a chunk at a time: no full-size copy
            rows = keep[first : first + self._chunk_rows]
            fresh.add(self._ids[rows].tolist(), _take(self._chunks, self._starts, rows))
        with exclusive():
            self._chunks, self._starts = fresh._chunks, fresh._starts
            self._ids, self._live, self._used = fresh._ids, fresh._live, fresh._used
        return True

    def capture(self) -> Captured:
        """The current chunks, ids and row count: the rows they name never change, so no copy."""
        return tuple(self._chunks), tuple(self._starts), self._ids, self._used

    @staticmethod
    def gather(captured: Captured, internals: list[int]) -> np.ndarray:
        chunks, starts, ids, used = captured
        return _take(chunks, starts, _rows_of(ids[:used], internals))
