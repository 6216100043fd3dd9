"""The caller's values of a cosine index: exact, compacted as vectors churn, and stable for a
snapshot that captured them."""

from __future__ import annotations

import contextlib
import json
import pickle
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.vector.backends import faiss_raw
from services.vector.backends import faiss_snapshot as snapshots
from services.vector.backends import faiss_storage as storage
from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.backends.faiss_raw import CHUNK_BYTES, COMPACT_MIN_ROWS, FIRST_CAPACITY, RawValues
from services.vector.model import IndexSpec, Metric, VectorBatch, keys_in
from strata.vector.v1 import vector_pb2 as pb

DIMS = 4


def _rows(start: int, count: int) -> np.ndarray:
    return np.arange(start * DIMS, (start + count) * DIMS, dtype=np.float32).reshape(count, DIMS)


def _add(raw: RawValues, start: int, count: int) -> None:
    raw.reserve(count)
    raw.add(list(range(start, start + count)), _rows(start, count))


def test_forgotten_rows_are_compacted_away_and_live_rows_keep_their_values() -> None:
    raw = RawValues(DIMS)
    _add(raw, 0, 1000)
    raw.forget(range(0, 1000, 2))
    assert len(raw) == 500
    assert not raw.compact(contextlib.nullcontext)  # too few forgotten rows to be worth a copy
    live = 1000
    while live < 1000 + 2 * COMPACT_MIN_ROWS:  # churn: every new row replaces an old one
        _add(raw, live, 100)
        raw.forget(range(live - 1000, live - 900))
        live += 100
    held = []
    assert raw.compact(lambda: held.append(1) or contextlib.nullcontext())
    assert held == [1]  # the swap, and only the swap, held readers off
    assert len(raw) == 1000  # the last 1000 ids
    for internal in (live - 1000, live - 901, live - 1):
        assert np.array_equal(raw.get(internal), _rows(internal, 1)[0])


def test_a_capture_keeps_its_rows_through_later_adds_and_compaction() -> None:
    raw = RawValues(DIMS)
    _add(raw, 0, 10)
    captured = raw.capture()
    raw.forget(range(10))
    _add(raw, 10, 3 * COMPACT_MIN_ROWS)  # grows into a new array
    raw.forget(range(10, 10 + 2 * COMPACT_MIN_ROWS))
    assert raw.compact(contextlib.nullcontext)
    assert np.array_equal(RawValues.gather(captured, [9, 0, 5]), _rows(0, 10)[[9, 0, 5]])
    assert np.array_equal(raw.get(10 + 3 * COMPACT_MIN_ROWS - 1), _rows(10 + 3 * COMPACT_MIN_ROWS - 1, 1)[0])


def test_churned_cosine_values_read_back_exactly_through_compaction_and_restart(
    open_vector: Callable[..., Any],
) -> None:
    rng = np.random.default_rng(3)
    ids = [f"v{i}" for i in range(500)]
    latest: dict[str, list[float]] = {}
    with open_vector(wal_max_entries=100_000, snapshot_interval_seconds=3600) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=DIMS, metric=pb.METRIC_COSINE))
        for _ in range(12):  # 6,000 replacements: more forgotten rows than COMPACT_MIN_ROWS
            values = rng.standard_normal((len(ids), DIMS)).astype("<f4")
            columns = pb.VectorColumns(ids=ids, values=values.tobytes())
            stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", columns=columns))
            latest = {vid: row.tolist() for vid, row in zip(ids, values, strict=True)}
        got = stub.GetVectors(pb.GetVectorsRequest(index_name="docs", ids=ids)).vectors
        assert {v.id: list(v.values) for v in got} == latest
    with open_vector() as stub:
        got = stub.GetVectors(pb.GetVectorsRequest(index_name="docs", ids=ids)).vectors
        assert {v.id: list(v.values) for v in got} == latest
        best = stub.Query(pb.QueryRequest(index_name="docs", vector=latest["v7"], top_k=1)).matches[0]
        assert best.id == "v7" and abs(best.score - 1.0) < 1e-5


def test_rows_are_found_by_id_and_forgetting_is_idempotent() -> None:
    raw = RawValues(DIMS)
    _add(raw, 0, 10)
    _add(raw, 20, 5)  # ids may skip (deleted before they were added here) but only grow
    assert np.array_equal(raw.get(22), _rows(22, 1)[0])
    raw.forget([3, 3, 21, 99])  # 99 was never here
    raw.forget([3])
    assert len(raw) == 13
    for gone in (3, 21, 15):
        with pytest.raises(KeyError):
            raw.get(gone)
    with pytest.raises(ValueError, match="only grow"):
        raw.add([24], _rows(24, 1))
    with pytest.raises(KeyError):
        RawValues.gather(raw.capture(), [0, 15])


def test_a_snapshot_listing_records_out_of_id_order_restores_every_value(tmp_path: Path) -> None:
    spec = IndexSpec("docs", DIMS, Metric.COSINE)
    index = FaissIndex(spec, tmp_path)
    index.load()
    values = np.random.default_rng(4).standard_normal((50, DIMS)).astype(np.float32)
    keys = keys_in("", [f"v{i}" for i in range(50)])
    index.write(VectorBatch(keys, values, [{"i": i} for i in range(50)], [f'{{"i":{i}}}' for i in range(50)]), True)
    assert index.snapshot()
    index.close()
    # Rewrite the snapshot (in the one-pickle format 1, metadata as dicts) with its records and rows reversed.
    state = snapshots.read(tmp_path / storage.SNAPSHOT_FILE)
    records = [(i, namespace, vid, json.loads(text)) for i, namespace, vid, text in state["records"]]
    state["format"], state["records"], state["raw"] = 1, records[::-1], state["raw"][::-1].copy()
    (tmp_path / storage.SNAPSHOT_FILE).write_bytes(pickle.dumps(state, protocol=5))
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    got = reopened.get_keys(keys)
    assert [record.key for record in got] == keys
    assert np.array_equal(np.stack([record.values for record in got]), values)
    assert [record.metadata for record in got] == [{"i": i} for i in range(50)]
    reopened.close()


def test_the_next_full_chunk_is_made_once_the_last_is_half_used(monkeypatch: pytest.MonkeyPatch) -> None:
    populated: list[tuple[int, int]] = []
    monkeypatch.setattr(faiss_raw, "populate_later", lambda address, length: populated.append((address, length)))
    dims = CHUNK_BYTES // (4 * FIRST_CAPACITY)  # full-size chunks of FIRST_CAPACITY rows
    raw = RawValues(dims)
    rows = np.random.default_rng(6).standard_normal((1_600, dims)).astype(np.float32)
    raw.reserve(500)  # the first chunk, under half used: no second yet
    assert len(raw.capture()[0]) == 1
    raw.add(list(range(500)), rows[:500])
    raw.reserve(100)  # past half: the next chunk now, faulted in while the first fills
    chunks = raw.capture()[0]
    assert len(chunks) == 2
    assert populated[-1] == (chunks[1].ctypes.data, chunks[1].nbytes)
    raw.add(list(range(500, 600)), rows[500:600])
    raw.reserve(1_000)  # straddles into the early chunk, which is then over half used too
    raw.add(list(range(600, 1_600)), rows[600:])
    assert len(raw.capture()[0]) == 3
    assert np.array_equal(RawValues.gather(raw.capture(), list(range(1_600))), rows)


def test_growing_adds_chunks_and_never_moves_the_rows_already_held() -> None:
    dims = 256
    raw = RawValues(dims)
    raw.reserve(10)
    first = raw.capture()[0][0]
    assert len(first) == FIRST_CAPACITY  # a small index stays small
    values = np.random.default_rng(5).standard_normal((CHUNK_BYTES // (4 * dims) * 3, dims)).astype(np.float32)
    added = 0
    for step in (10, 1500, 700, len(values) - 2210):  # batches that straddle chunk boundaries
        raw.reserve(step)
        raw.add(list(range(added, added + step)), values[added : added + step])
        added += step
    chunks = raw.capture()[0]
    assert chunks[0] is first  # held rows were never copied to a bigger array
    assert max(chunk.nbytes for chunk in chunks) <= CHUNK_BYTES
    wanted = [0, 9, 10, 1023, 1024, 2209, added - 1, 4097]
    assert np.array_equal(RawValues.gather(raw.capture(), wanted), values[wanted])
    for internal in wanted:
        assert np.array_equal(raw.get(internal), values[internal])


def test_readers_get_exact_values_while_vectors_churn_compact_and_snapshot(tmp_path: Path) -> None:
    """Every value a reader gets belongs to the metadata it came with, while rows are replaced,
    chunks compacted and snapshots taken from other threads; a restart reads the last round."""
    spec = IndexSpec("docs", DIMS, Metric.COSINE)
    index = FaissIndex(spec, tmp_path)
    index.load()
    count, rounds = 300, 40  # 12,000 rows written for 300 keys: compaction runs several times
    keys = keys_in("", [f"v{i}" for i in range(count)])

    def values(round_: int) -> np.ndarray:
        i = np.arange(count, dtype=np.float32)
        return np.stack([np.full(count, round_ + 1.0), i + 1, (i * round_) % 7 + 1, i % 3 + 1], axis=1).astype(
            np.float32
        )

    def expected(metadata: dict[str, int]) -> np.ndarray:
        return values(metadata["r"])[metadata["i"]]

    def write(round_: int) -> None:
        metadata = [{"r": round_, "i": i} for i in range(count)]
        index.write(VectorBatch(keys, values(round_), metadata, [json.dumps(m) for m in metadata]), True)

    write(0)
    done = threading.Event()
    errors: list[str] = []

    def read(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not done.is_set():
            for record in index.get_keys([keys[i] for i in rng.integers(0, count, 20)]):
                if not np.array_equal(record.values, expected(record.metadata)):
                    errors.append(f"get {record.key}: {record.values} for {record.metadata}")
            query = SearchRequest(values(0)[int(rng.integers(0, count))], 5, True, True)
            for match in index.search_many([query])[0]:
                if not np.array_equal(match.values, expected(match.metadata)):
                    errors.append(f"query {match.key}: {match.values} for {match.metadata}")

    def snapshot() -> None:
        while not done.is_set():
            index.snapshot()
            time.sleep(0.02)

    threads = [threading.Thread(target=read, args=(seed,)) for seed in (1, 2)] + [threading.Thread(target=snapshot)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(1, rounds):
            write(round_)
    finally:
        done.set()
        for thread in threads:
            thread.join()
    assert not errors, errors[:3]
    index.close()
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    got = reopened.get_keys(keys)
    assert np.array_equal(np.stack([record.values for record in got]), values(rounds - 1))
    assert [record.metadata for record in got] == [{"r": rounds - 1, "i": i} for i in range(count)]
    reopened.close()
