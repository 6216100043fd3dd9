"""Memory management tuned for servers: the C allocator and Python's cycle collector.

glibc hands memory back to the kernel as soon as 128 KiB lie free at the top of the heap, and
gives every block over its (adaptive) threshold a mapping of its own. A server receiving
1-2 MB gRPC messages then faults fresh pages in for every message it copies, several times
per message: measured here, Python gRPC receiving 1.6 MB requests spent 2.7-4.7 ms of CPU
per request with glibc's defaults and 1.4-1.6 ms with the default setting. The price is that a
process keeps up to STRATA_ALLOCATOR_KEEP_MIB of freed memory for reuse.

Python's cycle collector runs a young-generation pass every 700 new container objects, and
every so often a full pass over every tracked object (the vector index keeps its per-vector
records as tuples of strings, which the collector stops tracking: `faiss_records`). A
1,000-vector write allocates thousands of objects: with the default thresholds the vector
service spent ~2.4 ms of CPU per such write in the collector, ~0.2 ms with the thresholds
below. Reference counting still frees everything at once; only garbage cycles wait longer.

A server that keeps large, growing arrays (the vector service's FAISS storage) can also ask
glibc (2.35 and later) to back its large blocks with transparent huge pages, which most
kernels give only to memory that asks (THP mode "madvise"). A fresh 4 KiB page costs a fault
the first time it is touched, and in a VM that fault is slow: FAISS adding 1,000 x 384
vectors spent 2.1 ms per batch, 1.5 ms of it faulting its growing storage in; with huge pages,
0.6 ms. glibc reads the setting only when a process starts, so the process re-executes
itself once with GLIBC_TUNABLES set (`restart_with_huge_pages`).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger("strata.runtime")

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc refuses more on 64-bit
# (new containers before a young pass, young passes per middle pass, middle passes per full pass)
GC_THRESHOLDS = (20_000, 20, 20)
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def keep_freed_memory(mib: int) -> bool:
    """Keep up to `mib` MiB of freed heap, and serve blocks up to a quarter of it from the heap.
    True when applied; False on a C library without glibc's mallopt, or for 0."""
    if mib <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    keep = mib * 1024 * 1024
    applied = bool(mallopt(M_TRIM_THRESHOLD, keep)) and bool(
        mallopt(M_MMAP_THRESHOLD, min(keep // 4, MMAP_THRESHOLD_MAX))
    )
    if not applied:
        log.debug("malloc tuning not applied", extra={"keep_mib": mib})
    return applied


def collect_garbage_less_often() -> None:
    """Raise the cycle collector's thresholds (see the module docstring)."""
    gc.set_threshold(*GC_THRESHOLDS)


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").split()  # "glibc 2.36"
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (ValueError, OSError, AttributeError):
        return None


def _glibc_has_huge_pages() -> bool:
    version = _glibc_version()
    return sys.platform.startswith("linux") and version is not None and version >= (2, 35)


def _huge_pages_tunable(environ: Mapping[str, str]) -> str | None:
    """The value GLIBC_TUNABLES gives glibc.malloc.hugetlb, or None where it is not set."""
    tunables = dict(item.partition("=")[::2] for item in environ.get("GLIBC_TUNABLES", "").split(":"))
    return tunables.get("glibc.malloc.hugetlb")


def huge_pages_would_help(environ: Mapping[str, str] = os.environ) -> bool:
    """True when glibc can give large blocks huge pages, the kernel gives them only on request,
    and this process has not asked yet (nor been told not to)."""
    if _huge_pages_tunable(environ) is not None or not _glibc_has_huge_pages():
        return False
    try:
        return "[madvise]" in THP_MODE.read_text()  # "always": every block gets them anyway
    except OSError:
        return False


def restart_with_huge_pages() -> None:
    """Re-execute this process (same pid, arguments and environment) with glibc's malloc backing
    large blocks with transparent huge pages; returns at once where that would not help."""
    if not huge_pages_would_help():
        return
    tunables = ":".join(filter(None, (os.environ.get("GLIBC_TUNABLES", ""), HUGE_PAGES_TUNABLE)))
    log.debug("re-executing with huge pages", extra={"tunables": tunables})
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], {**os.environ, "GLIBC_TUNABLES": tunables})
