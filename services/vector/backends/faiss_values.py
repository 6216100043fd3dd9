"""The values callers sent to a cosine index, read back from the files that already hold them.

FAISS holds cosine vectors normalised, so the caller's values are kept apart to be given back
exactly. They are on disk already: every write logs them before it is acknowledged
(`faiss_storage.LogWriter`), and a snapshot holds those of every live vector. So the index
keeps only where each run of rows sits (a file and an offset per logged batch, or per snapshot),
and reads a vector's values back with `pread` when a caller asks for them. Keeping a second copy
in memory doubled a cosine index's memory (2 x 4 x dimensions bytes per vector) and cost each
write a copy into fresh memory; now a write adds one small record, and values are read from the
page cache (or the disk, once the kernel has dropped them for memory it needed) only when asked.

Internal ids only grow, so runs are added in id order and a row is found by binary search. A run
never changes once added. After a snapshot, the runs it covers (every id below the capture's next
id) are replaced by one run over the snapshot file (`replace_before`), and the files nothing refers
to any more are closed: the log files that held them are deleted next. Rows of vectors replaced
or deleted since are never asked for (the index's records say which ids live) and go with their
files. A snapshot in a format before 5 holds the values pickled: those rows are kept in memory
until the next snapshot writes them out as a run of the file.

Callers hold the index's lock: shared to read, exclusive to add, replace or close (a read never
meets a closed file descriptor).
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# A read of rows spread thinner than this (span over rows wanted) reads them one by one.
SPREAD_LIMIT = 4
# Up to this many ids are looked up one by one, not against an array of every run's first id.
FEW = 64


def find_rows(ids: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each of `wanted` sits in the increasing `ids`, and whether it is there at all."""
    if not len(ids):
        return np.zeros(len(wanted), np.int64), np.zeros(len(wanted), bool)
    rows = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
    return rows, ids[rows] == wanted


_seek_lock = threading.Lock()


def _pread(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes at `offset`; where there is no pread (Windows), a seek and a read under a lock."""
    if hasattr(os, "pread"):
        data = os.pread(fd, size, offset)
    else:  # pragma: no cover - Windows
        with _seek_lock:
            os.lseek(fd, offset, os.SEEK_SET)
            data = os.read(fd, size)
    if len(data) != size:
        raise RuntimeError(f"a vector values file ended early: {len(data)} of {size} bytes at {offset}")
    return data


@dataclass(frozen=True, slots=True)
class Run:
    """Rows of values for internal ids first..last: ids first, first + 1... in a file at `offset`
    (a logged batch), or the increasing `ids` in a file (a snapshot) or in `rows` (memory)."""

    first: int
    last: int
    file: Path | None = None
    offset: int = 0
    ids: np.ndarray | None = None
    rows: np.ndarray | None = None

    def positions(self, wanted: np.ndarray) -> np.ndarray:
        """The row of each id wanted (each must be in the run: KeyError names one that is not)."""
        if self.ids is None:
            rows = wanted - self.first
            found = (rows >= 0) & (wanted <= self.last)
        else:
            rows, found = find_rows(self.ids, wanted)
        if not found.all():
            raise KeyError(int(wanted[~found][0]))
        return rows


@dataclass(frozen=True)
class Captured:
    """The runs at one moment, with the first id of each (for binary search)."""

    runs: tuple[Run, ...]
    firsts: np.ndarray


class ValueFiles:
    def __init__(self, dimensions: int) -> None:
        self._row_bytes = 4 * dimensions
        self._dimensions = dimensions
        self._runs: list[Run] = []
        self._firsts: list[int] = []  # first id of each run, for bisect
        self._files: dict[Path, int] = {}  # open file descriptors of the files runs refer to

    def files(self) -> list[Path]:
        """The files runs refer to (and hold open)."""
        return list(self._files)

    def hold(self, paths: Iterable[Path]) -> None:
        """Open these files ahead of adding runs of them, so that adding cannot fail on an open
        (readers may run meanwhile: they only look files up)."""
        for path in paths:
            if path not in self._files:
                self._files[path] = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

    def _add(self, run: Run) -> None:
        if self._runs and run.first <= self._runs[-1].last:
            raise ValueError("internal ids must only grow")
        if run.file is not None:
            self.hold([run.file])
        self._runs.append(run)
        self._firsts.append(run.first)

    def add_logged(self, first: int, count: int, path: Path, offset: int) -> None:
        """Rows of the ids first..first + count - 1, logged at `offset` of the log file `path`."""
        if count:
            self._add(Run(first, first + count - 1, path, offset))

    def add_snapshot(self, ids: np.ndarray, path: Path, offset: int) -> None:
        """Rows of the increasing `ids`, one after another at `offset` of a snapshot file."""
        if len(ids):
            self._add(Run(int(ids[0]), int(ids[-1]), path, offset, ids=ids))

    def add_rows(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Rows held in memory (an older snapshot's), for the increasing `ids`."""
        if len(ids):
            self._add(Run(int(ids[0]), int(ids[-1]), ids=ids, rows=rows))

    def capture(self) -> Captured:
        """The runs as they are: they never change, and their files stay open until
        `replace_before`, which the snapshot taking this capture calls once it is written."""
        return Captured(tuple(self._runs), np.array(self._firsts, dtype=np.int64))

    def read(self, wanted: np.ndarray, captured: Captured | None = None) -> np.ndarray:
        """The rows of the increasing internal ids `wanted`, from the runs now or from runs
        `capture` returned."""
        out = np.empty((len(wanted), self._dimensions), np.float32)
        if not len(wanted):
            return out
        if captured is not None:
            runs: Sequence[Run] = captured.runs
            which = np.searchsorted(captured.firsts, wanted, side="right") - 1
        else:  # a few ids (a query's matches) need not convert every run's first id
            runs = self._runs
            if len(wanted) <= FEW:
                which = np.array([bisect.bisect_right(self._firsts, w) - 1 for w in wanted.tolist()], dtype=np.int64)
            else:
                which = np.searchsorted(np.array(self._firsts, dtype=np.int64), wanted, side="right") - 1
        if np.any(wanted[1:] <= wanted[:-1]):
            raise ValueError("internal ids must be increasing")
        if which[0] < 0:
            raise KeyError(int(wanted[0]))
        bounds = np.flatnonzero(np.diff(which)).tolist()
        ids = wanted.tolist()
        for start, stop in zip([0, *(b + 1 for b in bounds)], [*(b + 1 for b in bounds), len(ids)], strict=True):
            run = runs[int(which[start])]
            low, high = ids[start] - run.first, ids[stop - 1] - run.first + 1
            if run.ids is None and run.rows is None and high - low == stop - start and ids[stop - 1] <= run.last:
                # Consecutive ids of a logged batch (the common case, and every single-vector
                # write): one read straight into place.
                assert run.file is not None
                size = self._row_bytes
                data = _pread(self._files[run.file], (high - low) * size, run.offset + low * size)
                out[start:stop] = np.frombuffer(data, dtype="<f4").reshape(-1, self._dimensions)
                continue
            rows = run.positions(wanted[start:stop])
            if run.rows is not None:
                out[start:stop] = run.rows[rows]
            else:
                self._read_file(run, rows, out[start:stop])
        return out

    def _read_file(self, run: Run, rows: np.ndarray, out: np.ndarray) -> None:
        assert run.file is not None
        fd, size = self._files[run.file], self._row_bytes
        low, high = int(rows[0]), int(rows[-1]) + 1
        if high - low <= SPREAD_LIMIT * len(rows):  # one read for the span, then pick
            span = np.frombuffer(_pread(fd, (high - low) * size, run.offset + low * size), dtype="<f4")
            out[:] = span.reshape(-1, self._dimensions)[rows - low]
            return
        for i, row in enumerate(rows.tolist()):
            out[i] = np.frombuffer(_pread(fd, size, run.offset + row * size), dtype="<f4")

    def replace_before(self, next_id: int, snapshot: Path, ids: np.ndarray, offset: int) -> None:
        """A snapshot of every id below `next_id` is written: its run (the increasing `ids` at
        `offset`) replaces theirs, and files no run refers to any more are closed."""
        keep = self._runs[bisect.bisect_left(self._firsts, next_id) :]
        old = self._files
        self._runs, self._firsts, self._files = [], [], {}
        if snapshot in old:  # the snapshot file was replaced: the old descriptor reads the old one
            os.close(old.pop(snapshot))
        self.add_snapshot(ids, snapshot, offset)
        for run in keep:
            if run.file is not None and run.file in old and run.file not in self._files:
                self._files[run.file] = old.pop(run.file)
            self._add(run)
        for fd in old.values():
            os.close(fd)

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = {}
        self._runs, self._firsts = [], []
