"""The benchmarks' quick modes run end to end and print every figure the issue asks for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.contract.vector.milvus_server import milvus_lite_binary
from tests.support.backends import missing_backend
from tests.support.servers import REPO_ROOT


def _quick_run(script: str) -> str:
    """stdout of `bench/<script> --quick`, which must succeed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), "--quick"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_quick_benchmark_prints_every_figure() -> None:
    stdout = _quick_run("vector.py")
    for figure in (
        "upsert, batches of 1000 in columns",
        "gRPC alone",
        "CPU per batch (ms)",
        "single query latency p50",
        "single query latency p99",
        "queries/s, 16 concurrent clients",
        "filtered query p50, 10% selectivity",
        "HNSW recall@10 vs exact",
        "HNSW query p50",
        "restart to SERVING",
        "fresh memory: first touch",
    ):
        assert figure in stdout, figure


@pytest.mark.slow
def test_quick_milvus_benchmark_prints_every_figure() -> None:
    if milvus_lite_binary() is None:
        missing_backend("milvus-lite is not installed")
    stdout = _quick_run("vector_milvus.py")
    for figure in ("list every vector, pages of 100", "query p50 (ms)", "query p50 in a namespace"):
        assert figure in stdout, figure
