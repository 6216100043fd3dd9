"""The values callers sent to a cosine index, by internal id.

FAISS holds cosine vectors normalised, so the caller's values are kept here to be given back
exactly. They live in one array, appended to as vectors are added. A replaced or deleted
vector's row is only forgotten; once forgotten rows outnumber live ones, `compact` copies the
live rows into a new array, so memory follows the live vectors however much they churn.
(Keeping each vector as a view of the batch it came in would pin that whole batch for as long
as any one of its vectors lives.)

A row is never written twice: growing and compacting make a new array. So a snapshot reads the
rows it captured without a lock, and a reader never sees a row change under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

# Compact once forgotten rows are more than this many and outnumber the live ones.
COMPACT_MIN_ROWS = 4096
FIRST_CAPACITY = 1024


class RawValues:
    def __init__(self, dimensions: int) -> None:
        self._dimensions = dimensions
        self._array = np.empty((0, dimensions), dtype=np.float32)
        self._used = 0  # rows written so far (live or forgotten)
        self._row: dict[int, int] = {}  # internal id -> row

    def __len__(self) -> int:
        return len(self._row)

    def get(self, internal: int) -> np.ndarray:
        return self._array[self._row[internal]]

    def reserve(self, count: int) -> None:
        """Room for `count` more rows. The caller holds the index's writer lock but need not
        hold readers off: rows keep their positions in the bigger array."""
        if self._used + count > len(self._array):
            bigger = np.empty(
                (max(2 * len(self._array), self._used + count, FIRST_CAPACITY), self._dimensions), np.float32
            )
            bigger[: self._used] = self._array[: self._used]
            self._array = bigger

    def add(self, internals: list[int], values: np.ndarray) -> None:
        """Append rows (after `reserve`), with readers held off."""
        start, stop = self._used, self._used + len(internals)
        self._array[start:stop] = values
        self._row.update(zip(internals, range(start, stop), strict=True))
        self._used = stop

    def forget(self, internals: Iterable[int]) -> None:
        pop = self._row.pop
        for internal in internals:
            pop(internal, None)

    def compact(self, exclusive: Callable[[], AbstractContextManager[Any]]) -> bool:
        """Copy the live rows into a new array when forgotten rows outnumber them; the copy is
        made while readers go on, and only the swap holds them off (`exclusive`)."""
        forgotten = self._used - len(self._row)
        if forgotten <= max(COMPACT_MIN_ROWS, len(self._row)):
            return False
        internals = list(self._row)
        rows = np.fromiter(self._row.values(), dtype=np.int64, count=len(internals))
        array = np.empty((max(2 * len(internals), FIRST_CAPACITY), self._dimensions), np.float32)
        array[: len(internals)] = self._array[rows]
        row = dict(zip(internals, range(len(internals)), strict=True))
        with exclusive():
            self._array, self._row, self._used = array, row, len(internals)
        return True

    def capture(self) -> tuple[np.ndarray, dict[int, int]]:
        """The current array and a copy of the row map: the rows they name never change."""
        return self._array, dict(self._row)

    @staticmethod
    def gather(captured: tuple[np.ndarray, dict[int, int]], internals: list[int]) -> np.ndarray:
        array, row = captured
        return array[np.fromiter(map(row.__getitem__, internals), dtype=np.int64, count=len(internals))]
