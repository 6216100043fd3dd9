"""The benchmark runs end to end in its quick form and prints every figure beside its baseline."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT


@pytest.mark.slow
def test_quick_benchmark_prints_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / "inference.py"), "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        timeout=240,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in (
        "embeddings/s, 16 clients x 1 sentence",
        "micro-batching off",
        "generation tokens/s",
        "time to first token",
        "cold start to SERVING",
        "install size of the model stack",
    ):
        assert figure in done.stdout, done.stdout
