"""The values callers sent to a cosine index, by internal id.

FAISS holds cosine vectors normalised, so the caller's values are kept here to be given back
exactly. They live in one array, appended to as vectors are added, beside the internal id of
each row. Internal ids only ever grow, so the ids run in increasing order and a row is found by
binary search: no per-vector dictionary to fill on every write, or to copy for a snapshot. A
replaced or deleted vector's row is only marked forgotten; once forgotten rows outnumber live
ones, `compact` copies the live rows into new arrays, so memory follows the live vectors however
much they churn. (Keeping each vector as a view of the batch it came in would pin that whole
batch for as long as any one of its vectors lives.)

A row is never written twice: growing and compacting make new arrays. So a snapshot reads the
rows it captured without a lock or a copy, and a reader never sees a row change under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

# Compact once forgotten rows are more than this many and outnumber the live ones.
COMPACT_MIN_ROWS = 4096
FIRST_CAPACITY = 1024

# What `capture` returns: the values, the id of each row (increasing), and how many rows count.
Captured = tuple[np.ndarray, np.ndarray, int]


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


class RawValues:
    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions
        self._array = np.empty((0, dimensions), dtype=np.float32)
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
        return self._array[row]

    def reserve(self, count: int) -> None:
        """Room for `count` more rows. The caller holds the index's writer lock but need not
        hold readers off: rows keep their positions in the bigger arrays."""
        if self._used + count > len(self._array):
            capacity = max(2 * len(self._array), self._used + count, FIRST_CAPACITY)
            array = np.empty((capacity, self._dimensions), np.float32)
            ids = np.empty(capacity, np.int64)
            live = np.zeros(capacity, bool)
            array[: self._used] = self._array[: self._used]
            ids[: self._used] = self._ids[: self._used]
            live[: self._used] = self._live[: self._used]
            self._array, self._ids, self._live = array, ids, live

    def add(self, internals: list[int], values: np.ndarray) -> None:
        """Append rows (after `reserve`), with readers held off. Ids must be greater than any
        added before, in increasing order."""
        start, stop = self._used, self._used + len(internals)
        ids = np.asarray(internals, dtype=np.int64)
        if len(ids) and ((start and ids[0] <= self._ids[start - 1]) or np.any(ids[1:] <= ids[:-1])):
            raise ValueError("internal ids must only grow")
        self._array[start:stop] = values
        self._ids[start:stop] = ids
        self._live[start:stop] = True
        self._used = stop

    def forget(self, internals: Iterable[int]) -> None:
        """Mark rows forgotten (ids without a row are ignored), with readers held off."""
        rows, found = find_rows(self._ids[: self._used], np.fromiter(internals, dtype=np.int64))
        self._live[rows[found]] = False

    def compact(self, exclusive: Callable[[], AbstractContextManager[Any]]) -> bool:
        """Copy the live rows into new arrays when forgotten rows outnumber them; the copy is
        made while readers go on, and only the swap holds them off (`exclusive`)."""
        count = len(self)
        if self._used - count <= max(COMPACT_MIN_ROWS, count):
            return False
        keep = np.flatnonzero(self._live[: self._used])
        capacity = max(2 * len(keep), FIRST_CAPACITY)
        array = np.empty((capacity, self._dimensions), np.float32)
        ids = np.empty(capacity, np.int64)
        live = np.zeros(capacity, bool)
        array[: len(keep)] = self._array[keep]
        ids[: len(keep)] = self._ids[keep]
        live[: len(keep)] = True
        with exclusive():
            self._array, self._ids, self._live, self._used = array, ids, live, len(keep)
        return True

    def capture(self) -> Captured:
        """The current arrays and row count: the rows they name never change, so no copy."""
        return self._array, self._ids, self._used

    @staticmethod
    def gather(captured: Captured, internals: list[int]) -> np.ndarray:
        array, ids, used = captured
        return array[_rows_of(ids[:used], internals)]
