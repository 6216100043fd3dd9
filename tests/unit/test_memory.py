"""Memory tuning of the runtime: glibc keeps freed memory for large messages, the cycle collector runs less often."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from services.runtime.memory import keep_freed_memory

# Copies a 1.6 MB message the way a gRPC receive does, 200 times; prints the page faults it took.
PROBE = """
import resource, sys
from services.runtime.memory import keep_freed_memory
applied = keep_freed_memory(int(sys.argv[1]))
message = bytes(1_600_000)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    copy = bytes(bytearray(message))
    del copy
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(keep_mib: int) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(keep_mib)], check=True, capture_output=True, text=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_kept_memory_spares_the_page_faults_of_large_copies() -> None:
    applied, tuned = _faults(64)
    assert applied == "True"
    untouched, default = _faults(0)
    assert untouched == "False"
    # glibc's defaults fault in each copy afresh (~390 faults per 1.6 MB); kept memory is reused.
    assert default > 20_000, default
    assert tuned < default / 10, (tuned, default)


def test_zero_keeps_the_defaults() -> None:
    assert keep_freed_memory(0) is False


def test_cycle_collector_runs_less_often_and_still_frees_cycles() -> None:
    from services.runtime.memory import GC_THRESHOLDS, collect_garbage_less_often

    before = gc.get_threshold()
    try:
        collect_garbage_less_often()
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.collect()
        young_passes = gc.get_stats()[0]["collections"]
        for _ in range(5_000):  # 5,000 new containers: below the threshold, no young pass
            cycle: list[object] = []
            cycle.append(cycle)
        assert gc.get_stats()[0]["collections"] == young_passes
        node = _Node()
        node.self = node
        ref = weakref.ref(node)
        del node
        assert ref() is not None  # a cycle waits for the collector ...
        gc.collect()
        assert ref() is None  # ... which still frees it
    finally:
        gc.set_threshold(*before)


class _Node:
    self: object = None


def test_huge_pages_are_asked_for_only_where_glibc_and_the_kernel_need_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.runtime import memory

    mode = tmp_path / "enabled"
    monkeypatch.setattr(memory, "THP_MODE", mode)
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 36))
    monkeypatch.setattr(memory.sys, "platform", "linux")
    mode.write_text("always [madvise] never\n")
    assert memory.huge_pages_would_help({})
    assert memory.huge_pages_would_help({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert not memory.huge_pages_would_help({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})  # asked already
    mode.write_text("[always] madvise never\n")
    assert not memory.huge_pages_would_help({})  # every block gets them anyway
    mode.write_text("always madvise [never]\n")
    assert not memory.huge_pages_would_help({})
    mode.unlink()
    assert not memory.huge_pages_would_help({})  # no THP in this kernel
    mode.write_text("always [madvise] never\n")
    monkeypatch.setattr(memory, "_glibc_version", lambda: (2, 34))
    assert not memory.huge_pages_would_help({})  # the tunable came in glibc 2.35
    monkeypatch.setattr(memory, "_glibc_version", lambda: None)
    assert not memory.huge_pages_would_help({})  # musl and others


# Re-executes itself with huge pages, then fills 256 MiB of malloc'd blocks (as C++ code such as
# FAISS gets its storage) and prints its pid, its tunables and the page faults the fill took.
GROWTH = """
import ctypes, os, resource, sys
from services.runtime.memory import restart_with_huge_pages
if sys.argv[1] == "on":
    restart_with_huge_pages()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    block = libc.malloc(32 << 20)
    ctypes.memset(block, 1, 32 << 20)
print(os.getpid(), os.environ.get("GLIBC_TUNABLES", "-"), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_process_restarts_itself_once_with_huge_pages_and_faults_far_less() -> None:
    from services.runtime.memory import huge_pages_would_help

    if not huge_pages_would_help():
        pytest.skip("this machine needs no asking (not Linux with glibc 2.35+ and THP mode 'madvise')")

    def run(mode: str) -> tuple[int, int, str, int]:
        proc = subprocess.Popen([sys.executable, "-c", GROWTH, mode], stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        (line,) = out.splitlines()  # one line: the output of the re-executed process alone
        pid, tunables, faults = line.split()
        return proc.pid, int(pid), tunables, int(faults)

    spawned, pid, tunables, faults = run("on")
    assert pid == spawned  # the same process, re-executed
    assert "glibc.malloc.hugetlb=1" in tunables
    _, _, plain_tunables, plain_faults = run("off")
    assert "hugetlb" not in plain_tunables
    assert faults < plain_faults / 4, (faults, plain_faults)
