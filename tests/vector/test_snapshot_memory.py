"""A snapshot writes the vectors a step at a time: it never holds a second copy of them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, keys_in

DIMS = 1024
BATCH = 4096
BATCHES = 8  # 128 MiB of vectors


def _in_a_fresh_process(check: str, tmp_path: Path) -> None:
    """Run `check(tmp_path)` in an interpreter of its own: the peak it reads is then the
    snapshot's, not the suite's (whose servers, threads and heap share this process)."""
    code = "import sys, pathlib; from tests.vector import test_snapshot_memory as t; "
    code += "getattr(t, sys.argv[1])(pathlib.Path(sys.argv[2]))"
    done = subprocess.run(
        [sys.executable, "-c", code, check, str(tmp_path)],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def _resident(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak memory from /proc/self")
@pytest.mark.parametrize("metric", [Metric.EUCLIDEAN, Metric.COSINE])
def test_a_snapshot_holds_no_second_copy_of_the_vectors(tmp_path: Path, metric: Metric) -> None:
    """Before, a flat index's snapshot gathered every stored vector into one array and then
    picked the live ones into another (twice the index, briefly); a cosine index gathered every
    value the callers sent. Now the peak rise is one step of rows."""
    _in_a_fresh_process(f"check_flat_{metric.name.lower()}", tmp_path)


def check_flat_euclidean(tmp_path: Path) -> None:
    _check_flat(tmp_path, Metric.EUCLIDEAN)


def check_flat_cosine(tmp_path: Path) -> None:
    _check_flat(tmp_path, Metric.COSINE)


def _check_flat(tmp_path: Path, metric: Metric) -> None:
    spec = IndexSpec("docs", DIMS, metric)
    index = FaissIndex(spec, tmp_path)
    index.load()
    rng = np.random.default_rng(5)
    for batch in range(BATCHES):
        ids = [f"v{i}" for i in range(batch * BATCH, (batch + 1) * BATCH)]
        values = rng.standard_normal((BATCH, DIMS)).astype(np.float32)
        index.write(VectorBatch(keys_in("", ids), values, [{}] * BATCH, ["{}"] * BATCH), True)
    last = values[-1].copy()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _resident("VmRSS")
    assert index.snapshot()
    assert _resident("VmHWM") - before < 48 * 1024 * 1024  # the vectors are 128 MiB
    index.close()
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    (record,) = reopened.get_keys(keys_in("", [f"v{BATCH * BATCHES - 1}"]))
    assert np.array_equal(record.values, last)
    reopened.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak memory from /proc/self")
def test_an_hnsw_snapshot_is_written_and_read_without_a_copy_in_bytes(tmp_path: Path) -> None:
    """FAISS writes the index into the file and reads it back from it in pieces: no serialised
    copy of it all (which took the peak to ~3x the index on both sides). The captured index's
    storage is sized once, not grown by doubling as its rows are added (which held up to 1.5x
    the vectors at a growth)."""
    _in_a_fresh_process("check_hnsw", tmp_path)


def check_hnsw(tmp_path: Path) -> None:
    spec = IndexSpec("docs", DIMS, Metric.EUCLIDEAN, IndexType.HNSW, HnswParams(16, 40, 64))
    index = FaissIndex(spec, tmp_path)
    index.load()
    rng = np.random.default_rng(6)
    count = 8192  # 32 MiB of vectors
    values = rng.standard_normal((count, DIMS)).astype(np.float32)
    for start in range(0, count, 2048):
        ids = [f"v{i}" for i in range(start, start + 2048)]
        index.write(VectorBatch(keys_in("", ids), values[start : start + 2048], [{}] * 2048, ["{}"] * 2048), True)
    size = values.nbytes
    Path("/proc/self/clear_refs").write_text("5")
    before = _resident("VmRSS")
    assert index.snapshot()
    assert _resident("VmHWM") - before < 1.25 * size  # the captured index it writes, once
    index.close()
    Path("/proc/self/clear_refs").write_text("5")
    before = _resident("VmRSS")
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    assert _resident("VmHWM") - before < 1.5 * size  # the index it reads, once
    found = reopened.search_many([SearchRequest(values[123], 1, True, False)])[0]
    assert [match.key.id for match in found] == ["v123"] and np.array_equal(found[0].values, values[123])
    reopened.close()
