"""A cosine index scores vectors by direction across float32's whole range: FAISS computes the
norm in float32, so a vector whose sum of squares overflows came out all zeros and one whose
sum underflows came out unscaled, and each then scored ~0 against its own direction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, keys_in


@pytest.mark.parametrize("index_type", [IndexType.FLAT, IndexType.HNSW])
def test_extreme_vectors_score_by_their_direction(tmp_path: Path, index_type: IndexType) -> None:
    hnsw = HnswParams(8, 40, 64) if index_type is IndexType.HNSW else None
    index = FaissIndex(IndexSpec("docs", 4, Metric.COSINE, index_type, hnsw), tmp_path)
    index.load()
    values = np.array([[3e38, -3e38, 1, 0], [1e-30, 0, 0, -1e-30], [1e-45, 0, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    keys = keys_in("", ["big", "tiny", "subnormal", "plain"])
    index.write(VectorBatch(keys, values, [{}] * 4, ["{}"] * 4), True)
    queries = {"big": [1, -1, 0, 0], "tiny": [1, 0, 0, -1], "subnormal": [1, 0, 0, 0], "plain": [0, 0, 1e-30, 1e-30]}
    for expected, query in queries.items():
        (match,) = index.search_many([SearchRequest(np.array(query, dtype=np.float32), 1, True, False)])[0]
        assert (match.key.id, round(match.score, 4)) == (expected, 1.0)
        assert match.values is not None and np.array_equal(match.values, values[keys.index(match.key)])
    index.close()
