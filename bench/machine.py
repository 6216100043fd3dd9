"""What the machine itself costs, printed beside a benchmark's figures so that they can be read
against another machine's.

Fresh memory: the first write to a page makes the kernel zero it, and in a VM whose host backs
guest memory only when it is first touched (and takes freed memory back, as with virtio-balloon
free page reporting) every first write is also a host fault. A load into a new index or a new
file pays that for everything it stores (vectors, the log's page cache, an object's page cache),
and the raw baselines pay it too, but only for what they store themselves.
"""

from __future__ import annotations

import mmap
import time
from pathlib import Path

PAGE = mmap.PAGESIZE


def fresh_memory_rates(mib: int = 128) -> tuple[float, float]:
    """(GB/s writing one byte per page of fresh memory, GB/s doing it again), best of three."""
    first = again = 0.0
    size = mib * 1024 * 1024
    for _ in range(3):
        with mmap.mmap(-1, size) as memory:
            view = memoryview(memory)
            started = time.perf_counter()
            for offset in range(0, size, PAGE):
                view[offset] = 1
            touched = time.perf_counter()
            for offset in range(0, size, PAGE):
                view[offset] = 2
            done = time.perf_counter()
            view.release()
        first = max(first, size / (touched - started) / 1e9)
        again = max(again, size / (done - touched) / 1e9)
    return first, again


def page_reporting() -> bool:
    """Whether the kernel hands freed memory back to a hypervisor (free page reporting)."""
    try:
        return "page_reporting" in Path("/proc/cmdline").read_text() or Path("/sys/module/page_reporting").exists()
    except OSError:
        return False


def describe() -> str:
    """One line on fresh memory, for a benchmark's header."""
    first, again = fresh_memory_rates()
    line = f"fresh memory: first touch {first:.1f} GB/s, touched again {again:.1f} GB/s"
    if page_reporting():
        line += " (the kernel reports freed memory to a hypervisor, which backs it again on first touch)"
    return line
