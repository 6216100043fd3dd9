"""Readings of this process's memory, and running a check in an interpreter of its own.

Readings that are the whole process's (peak resident memory, the cycle collector's object
count) are then those of the code under test, not the suite's: servers, threads and heap that
other tests leave in the test process move them (CI has seen 12 MiB and a few hundred objects).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.support.servers import REPO_ROOT

_CALL = "import importlib, sys; getattr(importlib.import_module(sys.argv[1]), sys.argv[2])(*sys.argv[3:])"


def run_in_fresh_process(check: Callable[..., object], *args: str, timeout: float = 300) -> None:
    """Call the module-level function `check(*args)` in a new interpreter; fails with its
    traceback if it raises."""
    done = subprocess.run(
        [sys.executable, "-c", _CALL, check.__module__, check.__name__, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{check.__name__}{args} failed in its own interpreter:\n{done.stderr[-4000:]}"


def process_memory(field: str) -> int:
    """Bytes of a memory field of /proc/self/status: VmRSS (resident now), VmHWM (peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def reset_peak_memory() -> None:
    """Make VmHWM start again from VmRSS."""
    Path("/proc/self/clear_refs").write_text("5")
