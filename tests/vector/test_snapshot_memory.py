"""A snapshot writes the vectors a step at a time: it never holds a second copy of them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, keys_in
from tests.support.process_readings import process_memory, reset_peak_memory, run_in_fresh_process

DIMS = 1024
BATCH = 4096
BATCHES = 8  # 128 MiB of vectors


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads peak memory from /proc/self")
@pytest.mark.parametrize("metric", [Metric.EUCLIDEAN, Metric.COSINE])
def test_a_snapshot_holds_no_second_copy_of_the_vectors(tmp_path: Path, metric: Metric) -> None:
    """Before, a flat index's snapshot gathered every stored vector into one array and then
    picked the live ones into another (twice the index, briefly); a cosine index gathered every
    value the callers sent. Now the peak rise is one step of rows."""
    run_in_fresh_process(check_flat, str(tmp_path), metric.value)


def check_flat(directory: str, metric_value: str) -> None:
    tmp_path, metric = Path(directory), Metric(metric_value)
    spec = IndexSpec("docs", DIMS, metric)
    index = FaissIndex(spec, tmp_path)
    index.load()
    rng = np.random.default_rng(5)
    for batch in range(BATCHES):
        ids = [f"v{i}" for i in range(batch * BATCH, (batch + 1) * BATCH)]
        values = rng.standard_normal((BATCH, DIMS)).astype(np.float32)
        index.write(VectorBatch(keys_in("", ids), values, [{}] * BATCH, ["{}"] * BATCH), True)
    last = values[-1].copy()
    reset_peak_memory()
    before = process_memory("VmRSS")
    assert index.snapshot()
    assert process_memory("VmHWM") - before < 48 * 1024 * 1024  # the vectors are 128 MiB
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
    run_in_fresh_process(check_hnsw, str(tmp_path))


def check_hnsw(directory: str) -> None:
    tmp_path = Path(directory)
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
    reset_peak_memory()
    before = process_memory("VmRSS")
    assert index.snapshot()
    assert process_memory("VmHWM") - before < 1.25 * size  # the captured index it writes, once
    index.close()
    reset_peak_memory()
    before = process_memory("VmRSS")
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    assert process_memory("VmHWM") - before < 1.5 * size  # the index it reads, once
    found = reopened.search_many([SearchRequest(values[123], 1, True, False)])[0]
    assert [match.key.id for match in found] == ["v123"] and np.array_equal(found[0].values, values[123])
    reopened.close()
