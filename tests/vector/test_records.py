"""How the FAISS index keeps keys and metadata: nothing per vector for the cycle collector to
walk, and metadata handed out as a fresh dict parsed from the stored text."""

from __future__ import annotations

import gc
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.vector.backends import faiss_snapshot as snapshots
from services.vector.backends import faiss_storage as storage
from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.backends.faiss_records import parsed, text_of
from services.vector.model import IndexSpec, Metric, VectorBatch, VectorKey, keys_in
from strata.vector.v1 import vector_pb2 as pb
from tests.contract.vector.helpers import as_dict, struct
from tests.support.process_readings import run_in_fresh_process

DIMS = 4


def _batch(start: int, count: int, namespace: str = "") -> VectorBatch:
    rng = np.random.default_rng(start)
    # "n" is unique to each vector, as a chunk's id or position would be.
    metadata = [{"n": i, "tag": f"t{i % 7}", "nested": {"deep": i % 3}} for i in range(start, start + count)]
    texts = [text_of(fields) for fields in metadata]
    ids = [f"v{i}" for i in range(start, start + count)]
    return VectorBatch(keys_in(namespace, ids), rng.standard_normal((count, DIMS)).astype(np.float32), metadata, texts)


def test_stored_vectors_leave_nothing_for_the_cycle_collector(tmp_path: Path) -> None:
    """A full collection walks every tracked object: with a tracked key and record per
    vector it grew with the index (~190 ms at 500k vectors). The count is the whole process's,
    so it is taken in an interpreter of its own (in the suite's, servers other tests left
    running add a few hundred objects)."""
    run_in_fresh_process(check_nothing_tracked_per_vector, str(tmp_path))


def check_nothing_tracked_per_vector(directory: str) -> None:
    index = FaissIndex(IndexSpec("docs", DIMS, Metric.COSINE), Path(directory))
    index.load()
    index.write(_batch(0, 100), True)  # first-write allocations out of the count
    gc.collect()
    before = len(gc.get_objects())
    for start in range(100, 6100, 2000):
        index.write(_batch(start, 2000, namespace="ns" if start == 2100 else ""), True)
    gc.collect()
    added = len(gc.get_objects()) - before
    assert added < 100, added  # 6,000 vectors written: one tracked object each would be 6,000
    wanted = [VectorKey("ns", "v2100"), VectorKey("", "v4100")]
    assert [r.key for r in index.get_keys(wanted)] == wanted
    index.close()


def test_metadata_read_back_is_a_fresh_dict_each_time(tmp_path: Path) -> None:
    index = FaissIndex(IndexSpec("docs", DIMS, Metric.EUCLIDEAN), tmp_path)
    index.load()
    batch = _batch(0, 10)
    index.write(batch, True)
    first = index.get_keys([batch.keys[3]])[0]
    assert type(first.key) is VectorKey and first.metadata == {"n": 3, "tag": "t3", "nested": {"deep": 0}}
    first.metadata["n"] = -1
    first.metadata["nested"]["deep"] = -1
    assert index.get_keys([batch.keys[3]])[0].metadata == {"n": 3, "tag": "t3", "nested": {"deep": 0}}
    match = index.search_many([SearchRequest(batch.values[3], 1, False, True)])[0][0]
    assert type(match.key) is VectorKey and match.key == batch.keys[3]
    assert match.metadata == {"n": 3, "tag": "t3", "nested": {"deep": 0}}
    index.close()


def test_metadata_text_keeps_what_json_and_older_logs_can_hold() -> None:
    for fields in ({}, {"a": None, "b": [1, "x", None], "c": {"d": 1.5}}, {"é": "ünïcode ✓", "n": -0.0}):
        assert parsed(text_of(fields)) == fields
    legacy = parsed(text_of({"nan": math.nan, "inf": math.inf, "none": None}))  # logged before strict JSON
    assert math.isnan(legacy["nan"]) and legacy["inf"] == math.inf and legacy["none"] is None


@pytest.mark.parametrize("old_format", [3, 4])
def test_a_snapshot_in_an_earlier_format_loads(
    open_vector: Callable[..., Any], tmp_path: Path, old_format: int
) -> None:
    """Format 3 held metadata as dicts; 3 and 4 pickled the values after the records."""
    with open_vector(wal_max_entries=100_000, snapshot_interval_seconds=3600) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=DIMS, metric=pb.METRIC_COSINE))
        vectors = [
            pb.Vector(id=f"v{i}", values=[1, i, 0, 1], metadata=struct({"tag": f"t{i % 2}", "i": i})) for i in range(6)
        ]
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", vectors=vectors))
    directory = tmp_path / "vector" / "indexes" / "docs"
    state = snapshots.read(directory / storage.SNAPSHOT_FILE)
    assert state["format"] == 5 and all(isinstance(record[3], str) for record in state["records"])
    raw = np.array(state["raw"])  # mapped from the file in format 5
    # The same state as format 3 or 4 wrote it: header, records, values.
    records = state["records"]
    if old_format == 3:
        records = [(i, namespace, vid, parsed(text)) for i, namespace, vid, text in records]
    header = {**state, "format": old_format, "records": len(records), "raw": len(raw), "index": None}
    del header["raw_offset"], header["dimensions"]
    with open(directory / storage.SNAPSHOT_FILE, "wb") as out:
        for part in (header, records, raw):
            pickle.dump(part, out, protocol=5)
    with open_vector() as stub:
        got = stub.GetVectors(pb.GetVectorsRequest(index_name="docs", ids=["v3"])).vectors
        assert [(v.id, list(v.values), as_dict(v.metadata)) for v in got] == [
            ("v3", [1, 3, 0, 1], {"tag": "t1", "i": 3})
        ]
        found = stub.Query(
            pb.QueryRequest(index_name="docs", vector=[1, 3, 0, 1], top_k=6, filter=struct({"tag": "t0"}))
        )
        assert sorted(m.id for m in found.matches) == ["v0", "v2", "v4"]


def test_a_snapshot_holds_the_records_as_captured_while_writes_replace_and_delete_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The capture lists the ids only; records deleted or replaced before the file is written
    are kept aside for it, and the file is the state as captured."""
    index = FaissIndex(IndexSpec("docs", DIMS, Metric.COSINE), tmp_path)
    index.load()
    first = _batch(0, 1_000)
    index.write(first, True)
    real = snapshots.write

    def racing(captured: Any, out: Any, *, read_lock: Any) -> Any:
        index.delete_keys(first.keys[:100])  # writes go on while the file is written
        replaced = _batch(100, 100)
        replaced.metadata[:] = [{"n": -1}] * 100
        replaced.metadata_json[:] = ['{"n":-1}'] * 100
        index.write(replaced, True)
        index.write(_batch(5_000, 10), True)
        return real(captured, out, read_lock=read_lock)

    monkeypatch.setattr(snapshots, "write", racing)
    assert index.snapshot()
    assert index._graveyard is None  # nothing kept aside once the file is written
    state = snapshots.read(tmp_path / storage.SNAPSHOT_FILE)
    assert [(i, vid, parsed(text)) for i, _, vid, text in state["records"]] == [
        (i, f"v{i}", metadata) for i, metadata in enumerate(first.metadata)
    ]
    expected = {
        record.key: (record.metadata, record.values.tolist())
        for record in index.list_page(None, None, None, 2_000, True, True).records
    }
    index.close()
    reopened = FaissIndex(IndexSpec("docs", DIMS, Metric.COSINE), tmp_path)
    reopened.load()  # the snapshot, then the log written since its capture
    got = {
        record.key: (record.metadata, record.values.tolist())
        for record in reopened.list_page(None, None, None, 2_000, True, True).records
    }
    assert got == expected and len(got) == 910
    assert got[VectorKey("", "v150")][0] == {"n": -1}
    reopened.close()
