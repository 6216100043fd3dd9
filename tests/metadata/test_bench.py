"""The benchmark runs end to end in its quick form and prints every figure beside its baseline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT


@pytest.mark.slow
def test_quick_benchmark_prints_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "metadata.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "raw executemany" in out and "target >= 0.5x" in out
    assert "empty gRPC echo" in out and "target <= 0.3 ms" in out
    assert "8 clients" in out and "raw sqlite3, 8 threads" in out
