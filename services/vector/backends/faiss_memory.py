"""The memory behind a FAISS index's stored vectors: growing it without copying it
(`Capacity`), faulting it in ahead of the writes (`populate_later`), and backing it with
transparent huge pages.

Growth (`Capacity`). FAISS keeps an index's vectors in one std::vector that doubles as it fills:
the add that crosses its capacity copies every stored vector into fresh memory, and an add runs
under the index's exclusive lock, so every query waited for that copy (measured here on 384
dimensions: 200 ms at 256k vectors, 430 ms at 512k, about a second at 1M), and a load paid for
copying and faulting in about as much memory again as it stored. `Capacity.reserve` grows the
vector before an add that would not fit, to twice its room, by `realloc`: glibc serves a block
this large from a mapping of its own (unless its heap has that much free) and grows it with
`mremap`, which moves page tables, not bytes (0.2 ms for 46 MB in process, 1-4 ms up to 393 MB
in the service here); the new room stays untouched until used, and sizes are rounded so that
huge pages move whole (`_mapped_size`). A block in the heap is copied, under the lock, as
FAISS's growth did.
The SWIG std::vector has no `reserve`, so `Capacity` sets the vector's three pointers (begin,
end, end of storage) itself, having checked once (`_check_vectors`) that this build of FAISS
lays a std::vector out that way and frees its buffer with the C library's `free`; where that
check fails, FAISS grows its vectors itself, copying as before, and nothing is faulted in ahead.
IndexIDMap2's ids and an HNSW graph's arrays grow the same way (the graph's neighbour lists are
about a tenth of the vectors' size at M=16 and 384 dimensions).

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
import weakref
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


def _stored_region(index: Any) -> tuple[int, int, int] | None:
    """(address, bytes used, bytes of room) of the vectors an IndexIDMap2 over a flat or
    HNSW-flat index holds; the room is the bytes used where it cannot be read (`_GROWS`)."""
    codes = getattr(_storage(index), "codes", None)
    if codes is None or codes.size() == 0:
        return None
    size = codes.size()
    address = int(faiss.rev_swig_ptr(codes.data(), size).ctypes.data)
    room = _room(codes.owned_data) if _GROWS and codes.is_owned else size
    return address, size, max(room, size)


def _stored_vectors(index: Any) -> tuple[int, int] | None:
    """(address, bytes) of the vectors an IndexIDMap2 over a flat or HNSW-flat index holds."""
    region = _stored_region(index)
    return None if region is None else region[:2]


def _realloc() -> Any:
    if sys.platform == "win32":  # FAISS's DLL may allocate from a C runtime of its own
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the process (and FAISS's operator new) allocates with
        function = libc.realloc
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    function.restype = ctypes.c_void_p
    return function


_REALLOC = _realloc()


def _pointers(vector: Any) -> Any:
    """The (begin, end, end of storage) pointers of a SWIG-wrapped std::vector."""
    return _pointers_at(int(vector.this))


def _pointers_at(address: int) -> Any:
    """The (begin, end, end of storage) pointers of the std::vector at `address`."""
    return (ctypes.c_size_t * 3).from_address(address)


def _room(vector: Any) -> int:
    """Bytes a std::vector's buffer holds, used or not."""
    begin, _, stored = _pointers(vector)
    return int(stored - begin)


def _grow(vector: Any, capacity: int) -> None:
    """Give a std::vector `capacity` bytes of room (more than it has), keeping its contents; the
    new room is left untouched. The caller holds off every reader of the vector."""
    _grow_at(int(vector.this), capacity)


def _grow_at(address: int, capacity: int) -> None:
    pointers = _pointers_at(address)
    begin, end, _ = pointers
    grown = _REALLOC(begin or None, capacity)
    if not grown:
        raise MemoryError(f"cannot grow a vector index's storage to {capacity} bytes")
    pointers[0], pointers[1], pointers[2] = grown, grown + end - begin, grown + capacity


# glibc's header and rounding around a block it maps on its own (a size, then the page rounding).
_MALLOC_OVERHEAD = 4096


def _mapped_size(capacity: int) -> int:
    """`capacity`, raised so that a block this large is a whole number of huge pages once glibc
    maps it. Linux (6.7 on) then places the mapping on a huge-page boundary, and `mremap` moves
    such a mapping's huge pages whole; moving a mapping between two addresses that differ modulo
    2 MiB splits every huge page in it, and searches over 4 KiB pages run slower (see
    `HugePages`)."""
    if capacity < HUGE_PAGE:
        return capacity
    return -(-(capacity + _MALLOC_OVERHEAD) // HUGE_PAGE) * HUGE_PAGE - _MALLOC_OVERHEAD


def _check_vectors() -> bool:
    """Whether `_grow` is safe with this build of FAISS: its std::vector is three pointers,
    and a buffer `realloc` moved is freed with the rest (run once, on a vector of its own)."""
    if _REALLOC is None:
        return False
    try:
        probe = faiss.UInt8Vector()
        probe.resize(4096)
        begin, end, stored = _pointers(probe)
        if begin != int(probe.data()) or end - begin != 4096 or stored - begin < 4096:
            return False
        ctypes.memset(begin, 7, 4096)
        _grow(probe, 1 << 20)
        probe.resize(8192)  # fits the room: FAISS's code sees the new buffer and size
        return int(probe.data()) == _pointers(probe)[0] and ctypes.string_at(int(probe.data()), 4096) == b"\x07" * 4096
    except (AttributeError, TypeError, ValueError, MemoryError):
        return False


_GROWS = _check_vectors()


class _Arrays:
    """The arrays an add to an IndexIDMap2 over a flat or HNSW-flat index appends to, found once
    per index object: the vectors, the ids and, for HNSW, the graph's levels, offsets and
    neighbour lists. Every FAISS call lets go of the GIL, and in a busy service getting it back
    waits behind other threads (0.1-0.2 ms a call measured beside one busy thread, about ten
    calls a write, in the section every other write waits for): the write path reads the arrays'
    pointers with ctypes instead, and calls FAISS only when one must grow."""

    def __init__(self, index: Any) -> None:
        self._index = weakref.ref(index)  # the index owns the arrays; they are only read here
        storage = _storage(index)
        codes = getattr(storage, "codes", None)
        self.grows = bool(_GROWS and codes is not None and codes.is_owned)
        # (address of the std::vector, the MaybeOwnedVector pointing at it or None, bytes per vector)
        self.arrays: list[tuple[int, Any, int]] = []
        if codes is None or not self.grows:
            return
        self.arrays = [(int(codes.owned_data.this), codes, int(storage.code_size)), (int(index.id_map.this), None, 8)]
        graph = getattr(faiss.downcast_index(index.index), "hnsw", None)
        if graph is not None and graph.neighbors.is_owned:
            # Each vector takes 2M neighbour slots on level 0 and M on each level above; one level
            # above each is more than the levels' odds give (1/M, 1/M^2...), and an add that still
            # outgrows it is grown by FAISS itself.
            slots = int(graph.cum_nb_neighbors(2))
            self.arrays += [
                (int(graph.levels.this), None, 4),
                (int(graph.offsets.this), None, 8),
                (int(graph.neighbors.owned_data.this), graph.neighbors, slots * 4),
            ]

    def of(self, index: Any) -> bool:
        return self._index() is index

    def stored(self) -> tuple[int, int, int]:
        """(address, bytes used, bytes of room) of the vectors."""
        begin, end, stored = _pointers_at(self.arrays[0][0])
        return int(begin), int(end - begin), int(stored - begin)

    def needs(self, rows: int) -> list[tuple[int, Any, int, int]]:
        """(address, MaybeOwnedVector or None, bytes it must hold, bytes of room) for each array,
        for an add of `rows` vectors."""
        out = []
        for address, wrapper, per_vector in self.arrays:
            begin, end, stored = _pointers_at(address)
            out.append((address, wrapper, int(end - begin) + rows * per_vector, int(stored - begin)))
        return out


def _arrays(cached: _Arrays | None, index: Any) -> _Arrays:
    return cached if cached is not None and cached.of(index) else _Arrays(index)


class Capacity:
    """Grows one index's arrays ahead of its adds (see the module docstring), and faults in the
    room ahead of its vectors. Used by the one thread that adds to the index, before each add."""

    def __init__(self) -> None:
        self._address = 0  # of the buffer populated so far
        self._populated = 0  # the buffer's bytes faulted in ahead (`populate_later`) so far
        self._arrays: _Arrays | None = None

    def reserve(self, index: Any, rows: int, exclusive: Callable[[], AbstractContextManager[Any]]) -> None:
        """Make room for `rows` more vectors, taking `exclusive()` only if a buffer must grow."""
        arrays = self._arrays = _arrays(self._arrays, index)
        if rows <= 0 or not arrays.grows:
            return
        needs = arrays.needs(rows)
        short = [(address, wrapper, need, room) for address, wrapper, need, room in needs if need > room]
        if short:
            with exclusive():
                for address, wrapper, need, room in short:
                    _grow_at(address, _mapped_size(max(need, 2 * room)))  # as FAISS's own growth, no copy
                    if wrapper is not None:
                        wrapper.resize(wrapper.size())  # points FAISS at the buffer (it caches the address)
        begin, _, room = arrays.stored()
        stored = begin + room
        need = needs[0][2]
        if begin != self._address:
            self._address, self._populated = begin, 0  # another buffer
        # This add writes up to `need`; fault in the room after it before later adds reach it.
        if self._populated < need + POPULATE_AHEAD // 2 and self._populated < stored - begin:
            start = max(self._populated, need)
            finish = min(stored - begin, need + POPULATE_AHEAD)
            populate_later(begin + start, finish - start)
            self._populated = finish


class HugePages:
    """Keeps one index's vector storage on huge pages as it grows and moves.

    `advise` (after every write) marks the storage's whole buffer MADV_HUGEPAGE, room not yet
    written included, so pages the kernel faults in from then on can be huge: one call per buffer,
    as the mark lasts for the mapping (the call took ~0.5 ms here, and it holds the process's
    memory map lock, which page faults in every thread wait for). The mark covers every page of
    the buffer, from the one holding its first byte to the one holding its last: marking only the
    whole huge pages inside it split the buffer's mapping in three, `mremap` refuses to move a
    range that spans several mappings (EFAULT), and glibc's `realloc` then fell back to copying
    the whole storage while every query waited (`Capacity`; 68 ms at 268 MB here).
    Pages written before that stay small until `collapse` converts them (MADV_COLLAPSE copies
    them, ~1 ms per 1.5 MB): the index runs it from its maintenance tick, a bounded stretch at a
    time, not on the write path, and only over what is written (collapsing the room would fault
    all of it in).

    A service started with glibc's huge-page tunable (as the vector service restarts itself:
    `services.runtime.memory`) has every large block marked as glibc maps it, and collapsing
    pages that are already huge costs next to nothing. It is kept on all the same: a storage
    `Capacity` moved between addresses that differ modulo 2 MiB (a kernel before 6.7 does not
    align the mappings, `_mapped_size`) has had its huge pages split, and this converts them
    back. It is off when huge pages are turned off.
    """

    def __init__(self, enabled: bool = True) -> None:
        self._start = 0  # 2 MiB-aligned start of the storage last seen (it moves when the vector grows)
        self._advised = 0  # end of the range marked MADV_HUGEPAGE in that storage (0: none yet)
        self._written = 0  # end of the whole huge pages written
        self._collapsed = 0  # end of the range already collapsed
        self._enabled = enabled and _MADVISE is not None
        self._arrays: _Arrays | None = None

    def _region(self, index: Any) -> tuple[int, int, int] | None:
        """`_stored_region`, read with ctypes where the storage's vector can be (see `_Arrays`)."""
        arrays = self._arrays = _arrays(self._arrays, index)
        if not arrays.grows:
            return _stored_region(index)
        address, size, room = arrays.stored()
        return (address, size, room) if size else None

    def _pages(self, index: Any) -> tuple[int, int] | None:
        """The storage's buffer as whole pages, [first, end) (None: not one whole huge page
        yet); notes where its written huge pages end."""
        region = self._region(index)
        if region is None:
            return None
        address, size, room = region
        start = (address + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
        if (address + room) & ~(HUGE_PAGE - 1) <= start:
            return None
        if start != self._start:  # new storage (first call, or the vector grew and moved)
            self._start, self._advised, self._collapsed = start, 0, start
        self._written = max(start, (address + size) & ~(HUGE_PAGE - 1))
        return address & ~(mmap.PAGESIZE - 1), -(-(address + room) // mmap.PAGESIZE) * mmap.PAGESIZE

    def advise(self, index: Any) -> None:
        if not self._enabled:
            return
        pages = self._pages(index)
        if pages is None or pages[1] <= self._advised:
            return
        first = max(pages[0], self._advised)  # only the part not yet marked (room grown in place)
        if _MADVISE(first, pages[1] - first, MADV_HUGEPAGE) != 0:
            self._enabled = False
            log.debug("huge pages unavailable", extra={"errno": ctypes.get_errno()})
            return
        self._advised = pages[1]

    def pending(self) -> int:
        """Bytes written and advised but not yet collapsed."""
        return self._written - self._collapsed if self._enabled and self._advised else 0

    def collapse(self, index: Any, limit: int | None = None) -> None:
        """Convert up to `limit` bytes (all when None) of the advised, written storage to huge pages."""
        self.advise(index)
        pending = self.pending()
        if not pending:
            return
        step = pending if limit is None else max(HUGE_PAGE, limit & ~(HUGE_PAGE - 1))
        end = self._collapsed + min(pending, step)
        # Older kernels lack MADV_COLLAPSE (EINVAL): new pages are still huge, and khugepaged
        # converts the rest over time.
        _MADVISE(self._collapsed, end - self._collapsed, MADV_COLLAPSE)
        self._collapsed = end
