"""Memory tuning of the runtime: glibc keeps freed memory for large messages, the cycle collector runs less often."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

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
