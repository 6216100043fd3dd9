"""Flat indexes tombstone replaced and deleted vectors, then compact them in bulk on a copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.vector.backends import faiss_index
from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.model import IndexSpec, Metric, VectorBatch, VectorKey

SPEC = IndexSpec("t", 8, Metric.DOT_PRODUCT)


def _batch(ids: range, values: np.ndarray) -> VectorBatch:
    return VectorBatch([VectorKey("", f"v{i}") for i in ids], values, [{} for _ in ids], ["{}" for _ in ids])


def test_tombstones_are_invisible_then_compacted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(faiss_index, "COMPACT_MIN_TOMBSTONES", 50)
    rng = np.random.default_rng(0)
    index = FaissIndex(SPEC, tmp_path)
    index.load()
    first = rng.standard_normal((200, 8)).astype(np.float32)
    index.write(_batch(range(200), first), replace=True)
    # Replace 40 vectors (tombstones, below the compaction threshold): the old values never show.
    second = -first[:40]
    index.write(_batch(range(40), second), replace=True)
    assert index._index.ntotal == 240 and len(index._dead) == 40
    for row in range(40):
        request = SearchRequest(first[row], 5, include_values=True, include_metadata=False)
        for match in index.search_many([request])[0]:
            if match.key.id == f"v{row}":
                assert np.array_equal(match.values, second[row])
    # Top-k stays full although the nearest stored vectors are tombstones.
    top = index.search_many([SearchRequest(first[0], 100, False, False)])[0]
    assert len(top) == 100 and len({m.key for m in top}) == 100
    # Crossing the threshold compacts: storage shrinks to the live vectors.
    index.delete_keys([VectorKey("", f"v{i}") for i in range(100, 120)])
    assert index._index.ntotal == 180 and not index._dead
    assert index.info().vector_count == 180
    expected = {f"v{i}" for i in range(200) if not 100 <= i < 120}
    everything = index.search_many([SearchRequest(first[5], 100, False, False)])[0]
    assert {m.key.id for m in everything} <= expected
    index.close()
    reopened = FaissIndex(SPEC, tmp_path)
    reopened.load()
    assert reopened.info().vector_count == 180
    got = reopened.get_keys([VectorKey("", "v3"), VectorKey("", "v150")])
    assert np.array_equal(got[0].values, second[3]) and np.array_equal(got[1].values, first[150])
