"""The caller's values of a cosine index: read back exactly from the log and snapshot files that
hold them, never kept in memory, through churn, snapshots and restarts."""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.vector.backends import faiss_snapshot as snapshots
from services.vector.backends import faiss_storage as storage
from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.backends.faiss_values import ValueFiles
from services.vector.model import IndexSpec, Metric, VectorBatch, keys_in
from strata.vector.v1 import vector_pb2 as pb

DIMS = 4


def _rows(start: int, count: int) -> np.ndarray:
    return np.arange(start * DIMS, (start + count) * DIMS, dtype=np.float32).reshape(count, DIMS)


def _one(values: ValueFiles, internal: int) -> np.ndarray:
    """The row of one id, read as the index reads rows."""
    return values.read(np.array([internal], dtype=np.int64))[0]


def _file(path: Path, pad: int, rows: np.ndarray) -> Path:
    """A file holding `rows` after `pad` bytes of something else."""
    path.write_bytes(b"x" * pad + rows.astype("<f4").tobytes() + b"tail")
    return path


def test_rows_are_read_back_from_their_files_by_id(tmp_path: Path) -> None:
    values = ValueFiles(DIMS)
    values.add_logged(0, 10, _file(tmp_path / "a", 13, _rows(0, 10)), 13)
    values.add_logged(20, 5, _file(tmp_path / "b", 7, _rows(20, 5)), 7)  # ids may skip, but only grow
    values.add_logged(25, 3, _file(tmp_path / "b2", 0, _rows(25, 3)), 0)
    for internal in (0, 9, 20, 24, 25, 27):
        assert np.array_equal(_one(values, internal), _rows(internal, 1)[0])
    for missing in (-1, 10, 19, 28, 1000):
        with pytest.raises(KeyError):
            _one(values, missing)
    captured = values.capture()
    wanted = np.array([0, 3, 9, 21, 22, 24, 26], dtype=np.int64)
    assert np.array_equal(values.read(wanted, captured), _rows(0, 30)[wanted])
    assert np.array_equal(values.read(wanted), _rows(0, 30)[wanted])  # the runs now: a few ids, one by one
    assert values.read(np.array([], dtype=np.int64), captured).shape == (0, DIMS)
    with pytest.raises(KeyError):
        values.read(np.array([3, 15], dtype=np.int64), captured)
    with pytest.raises(ValueError, match="increasing"):
        values.read(np.array([3, 2], dtype=np.int64), captured)
    with pytest.raises(ValueError, match="only grow"):
        values.add_logged(27, 1, tmp_path / "a", 0)
    values.close()


def test_sparse_and_dense_reads_of_a_snapshot_run_agree(tmp_path: Path) -> None:
    ids = np.arange(0, 20_000, 2, dtype=np.int64)  # every other id lives
    rows = np.random.default_rng(1).standard_normal((len(ids), DIMS)).astype(np.float32)
    values = ValueFiles(DIMS)
    values.add_snapshot(ids, _file(tmp_path / "snap", 99, rows), 99)
    captured = values.capture()
    dense = ids[100:4100]
    sparse = ids[::97]  # spread far thinner than the span: read row by row
    assert np.array_equal(values.read(dense, captured), rows[100:4100])
    assert np.array_equal(values.read(dense), rows[100:4100])
    assert np.array_equal(values.read(sparse, captured), rows[::97])
    assert np.array_equal(_one(values, int(ids[-1])), rows[-1])
    with pytest.raises(KeyError):
        _one(values, 3)  # between two of the run's ids
    values.close()


def test_a_snapshot_run_replaces_the_runs_it_covers_and_their_files_close(tmp_path: Path) -> None:
    values = ValueFiles(DIMS)
    values.add_rows(np.arange(0, 5, dtype=np.int64), _rows(0, 5))  # an older snapshot's, in memory
    values.add_logged(5, 5, _file(tmp_path / "wal-1", 0, _rows(5, 5)), 0)
    values.add_logged(10, 5, _file(tmp_path / "wal-2", 3, _rows(10, 5)), 3)
    held = dict(values._files)
    snapshot_ids = np.array([1, 2, 7, 9], dtype=np.int64)  # the rest died before the capture
    values.replace_before(10, _file(tmp_path / "snap", 40, _rows(0, 10)[snapshot_ids]), snapshot_ids, 40)
    assert sorted(path.name for path in values.files()) == ["snap", "wal-2"]
    with pytest.raises(OSError):
        os.fstat(held[tmp_path / "wal-1"])  # closed: the log file can go
    assert values._files[tmp_path / "wal-2"] == held[tmp_path / "wal-2"]  # still in use, kept open
    for internal in (1, 2, 7, 9, 10, 14):
        assert np.array_equal(_one(values, internal), _rows(internal, 1)[0])
    for gone in (0, 5, 8):
        with pytest.raises(KeyError):
            _one(values, gone)
    # A later snapshot replaces the file of the same name: the new one is read, the old one closed.
    newer = np.array([2, 12], dtype=np.int64)
    os.rename(tmp_path / "snap", tmp_path / "snap.old")  # the old file lives on while open, as after a replace
    values.replace_before(15, _file(tmp_path / "snap", 8, _rows(0, 15)[newer]), newer, 8)
    assert values.files() == [tmp_path / "snap"]
    assert np.array_equal(_one(values, 12), _rows(12, 1)[0])
    with pytest.raises(KeyError):
        _one(values, 1)
    values.close()
    assert values.files() == []


def _write(index: FaissIndex, start: int, count: int, values: np.ndarray) -> None:
    keys = keys_in("", [f"v{i}" for i in range(start, start + count)])
    metadata = [{"i": i} for i in range(start, start + count)]
    index.write(VectorBatch(keys, values, metadata, [json.dumps(m) for m in metadata]), True)


def _open_files() -> list[str]:
    """What this process's file descriptors point at (Linux)."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:  # the descriptor listdir itself used
            continue
    return paths


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the open files from /proc")
def test_a_cosine_index_keeps_no_values_in_memory_and_lets_deleted_logs_go(tmp_path: Path) -> None:
    spec = IndexSpec("docs", DIMS, Metric.COSINE)
    index = FaissIndex(spec, tmp_path)
    index.load()
    rng = np.random.default_rng(2)
    values = rng.standard_normal((300, DIMS)).astype(np.float32)
    for start in range(0, 300, 100):
        _write(index, start, 100, values[start : start + 100])
    assert index.snapshot()
    _write(index, 300, 50, values[:50] * 2)  # after the snapshot: in the new log
    assert index._raw is not None
    runs = index._raw.capture().runs
    assert all(run.rows is None and run.file is not None for run in runs)  # files only, no rows
    assert {run.file.name for run in runs if run.file is not None} == {
        storage.SNAPSHOT_FILE,
        index._log.current.name if index._log else "",
    }
    assert not [path for path in _open_files() if str(tmp_path) in path and path.endswith("(deleted)")]
    got = index.get_keys(keys_in("", [f"v{i}" for i in range(350)]))
    assert np.array_equal(np.stack([record.values for record in got]), np.concatenate([values, values[:50] * 2]))
    index.close()


def test_churned_cosine_values_read_back_exactly_through_snapshots_and_restart(
    open_vector: Callable[..., Any],
) -> None:
    rng = np.random.default_rng(3)
    ids = [f"v{i}" for i in range(500)]
    latest: dict[str, list[float]] = {}
    with open_vector(wal_max_entries=5, snapshot_interval_seconds=0.2) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=DIMS, metric=pb.METRIC_COSINE))
        for _ in range(12):  # 6,000 replacements, snapshots between them
            values = rng.standard_normal((len(ids), DIMS)).astype("<f4")
            columns = pb.VectorColumns(ids=ids, values=values.tobytes())
            stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", columns=columns))
            latest = {vid: row.tolist() for vid, row in zip(ids, values, strict=True)}
            time.sleep(0.05)
        got = stub.GetVectors(pb.GetVectorsRequest(index_name="docs", ids=ids)).vectors
        assert {v.id: list(v.values) for v in got} == latest
    with open_vector() as stub:
        got = stub.GetVectors(pb.GetVectorsRequest(index_name="docs", ids=ids)).vectors
        assert {v.id: list(v.values) for v in got} == latest
        best = stub.Query(pb.QueryRequest(index_name="docs", vector=latest["v7"], top_k=1)).matches[0]
        assert best.id == "v7" and abs(best.score - 1.0) < 1e-5


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
    state["format"], state["records"], state["raw"] = 1, records[::-1], np.array(state["raw"][::-1])
    (tmp_path / storage.SNAPSHOT_FILE).write_bytes(pickle.dumps(state, protocol=5))
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    got = reopened.get_keys(keys)
    assert [record.key for record in got] == keys
    assert np.array_equal(np.stack([record.values for record in got]), values)
    assert [record.metadata for record in got] == [{"i": i} for i in range(50)]
    assert reopened.snapshot() is False  # nothing logged since: the values stay as loaded
    reopened.close()


def test_readers_get_exact_values_while_vectors_churn_and_snapshots_run(tmp_path: Path) -> None:
    """Every value a reader gets belongs to the metadata it came with, while rows are replaced
    and snapshots taken (each moving the values to a new file) from other threads; a restart
    reads the last round."""
    spec = IndexSpec("docs", DIMS, Metric.COSINE)
    index = FaissIndex(spec, tmp_path)
    index.load()
    count, rounds = 300, 40
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

    snapshots_taken = []

    def snapshot() -> None:
        while not done.is_set():
            snapshots_taken.append(index.snapshot())
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
    assert any(snapshots_taken)
    index.close()
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    got = reopened.get_keys(keys)
    assert np.array_equal(np.stack([record.values for record in got]), values(rounds - 1))
    assert [record.metadata for record in got] == [{"r": rounds - 1, "i": i} for i in range(count)]
    reopened.close()
