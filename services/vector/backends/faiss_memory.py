"""The memory behind a FAISS index's stored vectors: growing it outside the exclusive lock,
faulting it in ahead of the writes (`populate_later`), and backing it with transparent huge
pages.

Growth (`Capacity`). FAISS keeps an index's vectors in one std::vector that doubles as it fills:
the add that crosses its capacity copies every stored vector, and an add runs under the index's
exclusive lock, so every query waited for that copy (measured here on 384 dimensions: 200 ms at
256k vectors, 430 ms at 512k, about a second at 1M). Once the storage passes OUTSIDE_LOCK_FROM,
`Capacity.reserve` grows it before an add that would not fit: it copies the vectors into a
vector with twice the room (the room untouched until used, as FAISS's own growth leaves it)
while queries go on reading the current one (FAISS lets go of the GIL for the copies), and the
exclusive section only swaps the two. The copy passes through a temporary buffer of the
storage's size (the SWIG vector has no reserve), so it costs one more pass over fresh memory
than FAISS's growth, and while it runs the storage takes three times its size, not two: below
the threshold FAISS's own copy is short enough to keep.

Huge pages (`HugePages`).

An exact (flat) search reads every stored vector for every query, and HNSW hops across them
at random: with 4 KiB pages a 150 MB index costs tens of thousands of TLB misses per scan.
2 MiB pages cut that 512-fold; on 100k x 384 vectors a flat query here went from 8.7 to
5.8 ms. Linux only (madvise MADV_HUGEPAGE, and MADV_COLLAPSE from 6.1 to convert pages
already written); anywhere else, or when the kernel declines, this quietly does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import mmap
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any

import faiss

log = logging.getLogger("strata.vector.faiss")

MADV_HUGEPAGE = 14
MADV_COLLAPSE = 25
HUGE_PAGE = 2 * 1024 * 1024


def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    madvise = libc.madvise
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


_MADVISE = _madvise()
MADV_POPULATE_WRITE = 23  # Linux 5.14+
# Fresh memory is faulted in this far ahead of the vectors written (see `populate_later`).
POPULATE_AHEAD = 32 * 1024 * 1024
_populating = ThreadPoolExecutor(1, thread_name_prefix="vector-populate")  # its thread starts on first use
_populate_works = True


def _populate(start: int, end: int) -> None:
    global _populate_works
    # A step at a time: the call holds the process's memory map lock while it faults pages in,
    # and a thread mapping or unmapping memory meanwhile would wait for all of it.
    for step in range(start, end, HUGE_PAGE):
        if _MADVISE(step, min(HUGE_PAGE, end - step), MADV_POPULATE_WRITE) != 0:
            if ctypes.get_errno() == errno.EINVAL:
                _populate_works = False  # a kernel before 5.14: writes fault their pages in as before
            return  # or the range was freed meanwhile


def populate_later(address: int, length: int) -> None:
    """Fault in [address, address + length) on a background thread, ahead of writes to it.

    Fresh memory is expensive to touch the first time: the kernel zeroes every page, and in a VM
    the host may back it only then (measured here: 0.5 GB/s for a first write, 28 GB/s once
    the pages are in). A write path that appends into fresh memory pays that while it holds the
    index's locks. MADV_POPULATE_WRITE faults the pages in without touching their contents, so
    it is safe beside writers to the same range (or beside a free: it then fails harmlessly),
    and ctypes lets go of the GIL while it runs."""
    if length <= 0 or _MADVISE is None or not _populate_works:
        return
    start = address & ~(mmap.PAGESIZE - 1)
    end = (address + length + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    _populating.submit(_populate, start, end)


def _storage(index: Any) -> Any:
    """The flat index holding the vectors of an IndexIDMap2 over a flat or HNSW-flat index."""
    inner = faiss.downcast_index(index.index)
    return faiss.downcast_index(inner.storage) if hasattr(inner, "storage") else inner


def _stored_vectors(index: Any) -> tuple[int, int] | None:
    """(address, bytes) of the vectors an IndexIDMap2 over a flat or HNSW-flat index holds."""
    codes = getattr(_storage(index), "codes", None)
    if codes is None or codes.size() == 0:
        return None
    size = codes.size()
    address = int(faiss.rev_swig_ptr(codes.data(), size).ctypes.data)
    return address, size


# Smaller storages grow the FAISS way: an add copies them under the lock, which takes up to about
# a tenth of a second here; going through a spare copy would cost more. Larger ones grow here.
OUTSIDE_LOCK_FROM = 128 * 1024 * 1024


class Capacity:
    """Grows one index's vector storage ahead of its adds (see the module docstring). Used by the
    one thread that adds to the index, before each add."""

    def __init__(self) -> None:
        # What the last call saw: the index, its buffer and that buffer's size and capacity (bytes).
        self._index = 0
        self._address = 0
        self._size = 0
        self._bytes = 0
        self._populated = 0  # the storage's bytes faulted in ahead (`populate_later`) so far

    def _capacity(self, index: int, address: int, size: int) -> int:
        """The buffer's capacity, as far as known: FAISS's own std::vector grows as libstdc++'s
        does (to twice its size, or to what one add needs when that is more)."""
        if address == self._address and index == self._index:
            return self._bytes  # unchanged since the last call
        if index == self._index and self._address and address:
            return max(2 * self._size, size)  # the add since then reallocated it
        return size  # a new, loaded or compacted index: as full as its size says

    def reserve(self, index: Any, rows: int, exclusive: Callable[[], AbstractContextManager[Any]]) -> None:
        """Make room for `rows` more vectors, taking `exclusive()` only to swap buffers."""
        storage = _storage(index)
        codes = getattr(storage, "codes", None)
        if rows <= 0 or codes is None or not codes.is_owned:
            return
        size = codes.size()
        address = int(codes.data()) if size else 0
        identity = int(index.this)
        capacity = self._capacity(identity, address, size)
        need = size + rows * storage.code_size
        if need > capacity and size >= OUTSIDE_LOCK_FROM:
            # The SWIG std::vector has no reserve: fill one of the current size, then let it
            # reallocate (libstdc++ doubles it, copying the vectors, the new room untouched).
            grown = faiss.UInt8Vector()
            grown.resize(size)
            faiss.memcpy(grown.data(), codes.data(), size)
            grown.resize(need)
            capacity = max(need, 2 * size)
            grown.resize(size)  # shrinking keeps the capacity
            with exclusive():
                codes.owned_data.swap(grown)
                codes.resize(size)  # points FAISS at the new buffer
            address = int(codes.data())
            del grown  # the old buffer, freed here, outside the lock
        if address != self._address or identity != self._index:
            self._populated = 0  # another buffer
        self._index, self._address, self._size, self._bytes = identity, address, size, capacity
        # This add writes up to `need`; fault in the room after it before later adds reach it.
        if address and self._populated < need + POPULATE_AHEAD // 2 and self._populated < capacity:
            start = max(self._populated, need)
            end = min(capacity, need + POPULATE_AHEAD)
            populate_later(address + start, end - start)
            self._populated = end


class HugePages:
    """Keeps one index's vector storage on huge pages as it grows and moves.

    `advise` (after every write) marks the storage MADV_HUGEPAGE: a cheap call, so pages the
    kernel faults in from then on can be huge. Pages written before that stay small until
    `collapse` converts them (MADV_COLLAPSE copies them, ~1 ms per 1.5 MB): the index runs it
    from its maintenance tick, a bounded stretch at a time, not on the write path.

    A service started with glibc's huge-page tunable (as the vector service restarts itself:
    `services.runtime.memory`) needs none of this: glibc marks every large block as it maps
    it. It is then off, and so it is when huge pages are turned off.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._start = 0  # 2 MiB-aligned start of the storage last seen (it moves when the vector grows)
        self._advised = 0  # end of the range marked MADV_HUGEPAGE
        self._collapsed = 0  # end of the range already collapsed
        self._enabled = enabled and _MADVISE is not None

    def _aligned(self, index: Any) -> tuple[int, int] | None:
        region = _stored_vectors(index)
        if region is None:
            return None
        address, size = region
        start = (address + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        end = (address + size) & ~(HUGE_PAGE - 1)
        if end <= start:
            return None
        if start != self._start:  # new storage (first call, or the vector grew and moved)
            self._start, self._advised, self._collapsed = start, start, start
        return start, end

    def advise(self, index: Any) -> None:
        if not self._enabled:
            return
        aligned = self._aligned(index)
        if aligned is None or aligned[1] <= self._advised:
            return
        end = aligned[1]
        if _MADVISE(self._advised, end - self._advised, MADV_HUGEPAGE) != 0:  # only the part not yet marked
            self._enabled = False
            log.debug("huge pages unavailable", extra={"errno": ctypes.get_errno()})
            return
        self._advised = end

    def pending(self) -> int:
        """Bytes advised but not yet collapsed."""
        return self._advised - self._collapsed if self._enabled else 0

    def collapse(self, index: Any, limit: int | None = None) -> None:
        """Convert up to `limit` bytes (all when None) of advised storage to huge pages."""
        self.advise(index)
        if not self.pending():
            return
        step = self._advised if limit is None else max(HUGE_PAGE, limit & ~(HUGE_PAGE - 1))
        end = min(self._advised, self._collapsed + step)
        # Older kernels lack MADV_COLLAPSE (EINVAL): new pages are still huge, and khugepaged
        # converts the rest over time.
        _MADVISE(self._collapsed, end - self._collapsed, MADV_COLLAPSE)
        self._collapsed = end
