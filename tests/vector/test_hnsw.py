"""HNSW indexes: recall on structured data, filtered queries, replacement via tombstones, restart."""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from services.vector.backends import faiss_snapshot as snapshots
from services.vector.backends import faiss_storage as storage
from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, keys_in
from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import struct, vec

pb = vector_pb2
DIMS = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Low-rank plus noise, like real embeddings (recall on uniform noise means nothing)."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((8, DIMS))
    centers = rng.standard_normal((20, 8))
    points = centers[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, 8))
    return (points @ basis + 0.05 * rng.standard_normal((n, DIMS))).astype(np.float32)


def _load(stub: Any, name: str, data: np.ndarray) -> None:
    for start in range(0, len(data), 1000):
        batch = [vec(f"v{i}", data[i].tolist(), {"bucket": i % 10}) for i in range(start, min(start + 1000, len(data)))]
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name=name, vectors=batch))


def test_hnsw_recall_filters_tombstones_and_restart(open_vector: Callable[..., Any]) -> None:
    data = clustered(3000)
    queries = clustered(50, seed=1)
    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="exact", dimensions=DIMS, metric=pb.METRIC_COSINE))
        created = stub.CreateIndex(
            pb.CreateIndexRequest(
                name="graph",
                dimensions=DIMS,
                metric=pb.METRIC_COSINE,
                index_type=pb.INDEX_TYPE_HNSW,
                hnsw=pb.HnswConfig(m=16, ef_construction=64),
            )
        ).index
        assert created.index_type == pb.INDEX_TYPE_HNSW
        assert (created.hnsw.m, created.hnsw.ef_construction) == (16, 64) and created.hnsw.ef_search > 0
        _load(stub, "exact", data)
        _load(stub, "graph", data)

        def top(name: str, q: np.ndarray, **kw: Any) -> list[str]:
            request = pb.QueryRequest(index_name=name, vector=q.tolist(), top_k=10, **kw)
            return [m.id for m in stub.Query(request).matches]

        hits = sum(len(set(top("exact", q)) & set(top("graph", q))) for q in queries)
        assert hits / (10 * len(queries)) >= 0.9

        # A selective filter (1 in 1000) still returns every match.
        rare = struct({"$and": [{"bucket": 3}, {"$or": [{"bucket": 3}]}]})
        assert len(top("graph", queries[0], filter=rare)) == 10
        vector_ids = [f"v{i}" for i in range(3, 3000, 10)]
        stub.DeleteVectors(pb.DeleteVectorsRequest(index_name="graph", ids=vector_ids[:-2]))
        assert sorted(top("graph", queries[0], filter=struct({"bucket": 3}))) == sorted(vector_ids[-2:])

        # Replacing a vector hides the old position (a tombstone) and finds the new one.
        target = data[0]
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="graph", vectors=[vec("v1", target.tolist())]))
        first_two = top("graph", target)[:2]
        assert set(first_two) == {"v0", "v1"}
        before = [top("graph", q) for q in queries[:10]]
        count = stub.GetIndex(pb.GetIndexRequest(name="graph")).index.vector_count
        assert count == 3000 - len(vector_ids) + 2
    with open_vector() as stub:
        assert [
            top2
            for top2 in (
                [m.id for m in stub.Query(pb.QueryRequest(index_name="graph", vector=q.tolist(), top_k=10)).matches]
                for q in queries[:10]
            )
        ] == before
        assert stub.GetIndex(pb.GetIndexRequest(name="graph")).index.vector_count == count


def test_hnsw_batches_are_added_in_chunks_but_published_at_once(tmp_path) -> None:
    import threading
    import time

    from services.vector.backends.faiss_index import FaissIndex, SearchRequest
    from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, VectorKey

    spec = IndexSpec("h", DIMS, Metric.EUCLIDEAN, IndexType.HNSW, HnswParams(32, 200, 64))
    index = FaissIndex(spec, tmp_path)
    index.load()
    data = clustered(8000)

    def batch(lo: int, hi: int) -> VectorBatch:
        keys = [VectorKey("", f"v{i}") for i in range(lo, hi)]
        return VectorBatch(keys, data[lo:hi], [{} for _ in keys], ["{}" for _ in keys])

    index.write(batch(0, 30), replace=True)
    writer = threading.Thread(target=index.write, args=(batch(30, 8000), True))
    seen: list[int] = []
    stamps: list[float] = []
    started = time.perf_counter()
    writer.start()
    while writer.is_alive():
        seen.append(len(index.search_many([SearchRequest(data[0], 50, False, False)])[0]))
        stamps.append(time.perf_counter())
    writer.join()
    took = time.perf_counter() - started
    # Searches kept running while the graph grew (no gap near the write's length), and saw
    # the batch all or nothing.
    gaps = [b - a for a, b in zip([started, *stamps], stamps, strict=False)]
    assert max(gaps) < took / 3, (max(gaps), took)
    assert set(seen) <= {30, 50}
    assert len(index.search_many([SearchRequest(data[0], 50, False, False)])[0]) == 50


def _graph_arrays(index: Any) -> list[np.ndarray]:
    hnsw = faiss.downcast_index(index.index).hnsw
    return [
        faiss.vector_to_array(hnsw.levels),
        faiss.vector_to_array(hnsw.offsets),
        faiss.vector_to_array(hnsw.neighbors),
    ]


@pytest.mark.parametrize("room", ["none", "made ahead", "outgrown"])
def test_a_snapshot_holds_the_graph_as_captured_while_adds_rewire_it(tmp_path: Path, room: str) -> None:
    """The capture copies only the graph's arrays (into room made ahead when it still fits); the
    vectors and ids are read while the file is written, after later adds have grown them and
    rewired the neighbour lists of earlier vectors. The snapshot is still the index as captured,
    to the byte, and searches it alike."""
    data = clustered(1_200, seed=5)
    index = faiss.IndexIDMap2(faiss.IndexHNSWFlat(DIMS, 8, faiss.METRIC_INNER_PRODUCT))
    made = snapshots.graph_room(index, contextlib.nullcontext) if room == "outgrown" else None
    index.add_with_ids(data[:600], np.arange(600))
    if room == "made ahead":
        made = snapshots.graph_room(index, contextlib.nullcontext)
    as_captured = faiss.clone_index(index)
    records = {i: (("", f"v{i}"), "{}") for i in range(600)}
    captured = snapshots.capture(
        mutation_id=1,
        next_id=600,
        ids=list(records),
        records=lambda ids: [records[i] for i in ids],
        dead=set(),
        index=index,
        values=None,
        hnsw=True,
        room=made,
    )
    assert captured.graph is not None
    shared = made is not None and np.shares_memory(captured.graph.neighbors, made[2])
    assert shared is (room == "made ahead")  # outgrown room is left for a fresh copy
    index.add_with_ids(data[600:], np.arange(600, 1_200))  # grows the storage and rewires the graph
    assert any(not np.array_equal(a, b) for a, b in zip(_graph_arrays(index), _graph_arrays(as_captured), strict=True))
    path = tmp_path / "snapshot.bin"
    with open(path, "wb") as out:
        snapshots.write(captured, out, read_lock=contextlib.nullcontext)
    restored = snapshots.read(path)["index"]
    assert np.array_equal(faiss.serialize_index(restored), faiss.serialize_index(as_captured))
    queries = clustered(50, seed=6)
    assert all(
        np.array_equal(a, b) for a, b in zip(restored.search(queries, 10), as_captured.search(queries, 10), strict=True)
    )


def test_an_hnsw_snapshot_in_format_4_loads(tmp_path: Path) -> None:
    """Format 4 pickled the values and the serialised index in pieces after the records."""
    spec = IndexSpec("docs", 16, Metric.COSINE, IndexType.HNSW, HnswParams(8, 40, 64))
    index = FaissIndex(spec, tmp_path)
    index.load()
    values = clustered(300, seed=8)[:, :16].copy()
    keys = keys_in("", [f"v{i}" for i in range(300)])
    index.write(VectorBatch(keys, values, [{"i": i} for i in range(300)], [f'{{"i":{i}}}' for i in range(300)]), True)
    assert index.snapshot()
    index.close()
    state = snapshots.read(tmp_path / storage.SNAPSHOT_FILE)
    graph, raw = faiss.serialize_index(state["index"]), np.array(state["raw"])
    header = {**state, "format": 4, "records": len(state["records"]), "raw": len(raw), "index": len(graph)}
    del header["raw_offset"], header["dimensions"]
    with open(tmp_path / storage.SNAPSHOT_FILE, "wb") as out:
        for part in (header, state["records"], raw, graph[: len(graph) // 2], graph[len(graph) // 2 :]):
            pickle.dump(part, out, protocol=5)
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    found = reopened.search_many([SearchRequest(values[42], 1, True, True)])[0]
    assert [(m.key.id, m.metadata) for m in found] == [("v42", {"i": 42})]
    assert np.array_equal(found[0].values, values[42])
    reopened.close()
