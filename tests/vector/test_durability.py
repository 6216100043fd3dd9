"""Restarts: the snapshot plus the log bring back every acknowledged write."""

from __future__ import annotations

import contextlib
import json
import logging
import pickle
import shutil
import struct as struct_
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from services.vector.backends import faiss_snapshot as snapshots
from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import as_dict, struct, vec

pb = vector_pb2


def _dump(stub: Any, index: str) -> dict[tuple[str, str], tuple[list[float], dict]]:
    out = {}
    token = ""
    while True:
        page = stub.ListVectors(
            pb.ListVectorsRequest(
                index_name=index, page_size=1000, page_token=token, return_values=True, return_metadata=True
            )
        )
        for v in page.vectors:
            out[(v.namespace, v.id)] = (list(v.values), as_dict(v.metadata))
        token = page.next_page_token
        if not token:
            return out


def _index_dir(tmp_path: Path, name: str) -> Path:
    return tmp_path / "vector" / "indexes" / name


def _log_bytes(directory: Path) -> int:
    """Bytes in the index's log files (a snapshot may delete one between listing and stat)."""
    total = 0
    for path in directory.glob("wal-*.log"):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def _workload(stub: Any, name: str, rounds: int) -> None:
    rng = np.random.default_rng(7)
    for r in range(rounds):
        if r % 2:  # every other batch in columns: one namespace, metadata as JSON text
            values = rng.standard_normal((10, 8)).astype("<f4")
            columns = pb.VectorColumns(
                ids=[f"v{(r * 7 + i) % 40}" for i in range(10)],
                values=values.tobytes(),
                metadata_json=[json.dumps({"round": r, "i": i, "form": "columns"}) for i in range(10)],
                namespace=f"n{r % 4}",
            )
            stub.UpsertVectors(pb.UpsertVectorsRequest(index_name=name, columns=columns))
            continue
        batch = [
            vec(f"v{(r * 7 + i) % 40}", rng.standard_normal(8).tolist(), {"round": r, "i": i}, namespace=f"n{i % 2}")
            for i in range(10)
        ]
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name=name, vectors=batch))
        if r % 3 == 2:
            stub.DeleteVectors(pb.DeleteVectorsRequest(index_name=name, filter=struct({"round": r - 1})))


def _filtered(stub: Any, name: str) -> dict[str, list[tuple[str, str]]]:
    """What a few metadata filters select: answered from the postings."""
    out = {}
    for where in ({"i": {"$lt": 5}}, {"form": "columns"}, {"$or": [{"round": 18}, {"i": 9}]}, {"round": {"$ne": 0}}):
        got = stub.GetVectors(pb.GetVectorsRequest(index_name=name, filter=struct(where))).vectors
        out[json.dumps(where)] = sorted((v.namespace, v.id) for v in got)
    return out


def test_restart_replays_the_log(open_vector: Callable[..., Any], tmp_path: Path) -> None:
    # Thresholds high enough that no snapshot happens: everything comes back from the log alone.
    with open_vector(wal_max_entries=10_000, snapshot_interval_seconds=3600) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=8, metric=pb.METRIC_COSINE))
        _workload(stub, "docs", 12)
        before = _dump(stub, "docs")
        info = stub.GetIndex(pb.GetIndexRequest(name="docs")).index
        # Copy the disk state while the server runs (a clean stop would snapshot): a crash image.
        crashed = tmp_path / "crashed"
        shutil.copytree(tmp_path / "vector", crashed / "vector")
    assert not (crashed / "vector" / "indexes" / "docs" / "snapshot.bin").exists()
    with open_vector(data_dir=crashed) as stub:
        assert _dump(stub, "docs") == before
        again = stub.GetIndex(pb.GetIndexRequest(name="docs")).index
        assert (again.vector_count, again.last_mutation_id) == (info.vector_count, info.last_mutation_id)


@pytest.mark.parametrize(
    "kind",
    [
        {"metric": pb.METRIC_EUCLIDEAN},
        {"metric": pb.METRIC_COSINE},
        {"metric": pb.METRIC_DOT_PRODUCT},
        {"metric": pb.METRIC_COSINE, "index_type": pb.INDEX_TYPE_HNSW},
    ],
    ids=["flat-euclidean", "flat-cosine", "flat-dot", "hnsw-cosine"],
)
def test_snapshots_truncate_the_log_and_restart_is_exact(
    open_vector: Callable[..., Any], tmp_path: Path, kind: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small pieces, so the file holds many of each kind (records, values, HNSW graph).
    monkeypatch.setattr(snapshots, "RECORDS_PER_PIECE", 7)
    monkeypatch.setattr(snapshots, "BYTES_PER_PIECE", 100)
    with open_vector(wal_max_entries=5, snapshot_interval_seconds=0.2) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=8, **kind))
        _workload(stub, "docs", 20)
        before = _dump(stub, "docs")
        selected = _filtered(stub, "docs")
        assert all(selected.values())
        mutation = stub.GetIndex(pb.GetIndexRequest(name="docs")).index.last_mutation_id
        directory = _index_dir(tmp_path, "docs")
        # Wait (bounded) for the background snapshot to cover the log, then check it was cut.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _log_bytes(directory) > 0:
            time.sleep(0.05)
        assert (directory / "snapshot.bin").exists()
        assert _log_bytes(directory) == 0
        assert len(list(directory.glob("wal-*.log"))) == 1
        with open(directory / "snapshot.bin", "rb") as source:
            header = pickle.load(source)
        assert header["format"] == snapshots.FORMAT and "postings" not in header  # rebuilt on load
    with open_vector() as stub:
        assert _dump(stub, "docs") == before
        assert _filtered(stub, "docs") == selected
        assert stub.GetIndex(pb.GetIndexRequest(name="docs")).index.last_mutation_id == mutation
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", vectors=[vec("new", [1.0] * 8)]))
        assert stub.GetIndex(pb.GetIndexRequest(name="docs")).index.last_mutation_id == mutation + 1


def test_a_torn_log_tail_is_cut_off(
    open_vector: Callable[..., Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_vector(wal_max_entries=10_000, snapshot_interval_seconds=3600) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=8, metric=pb.METRIC_DOT_PRODUCT))
        _workload(stub, "docs", 4)
        before = _dump(stub, "docs")
        crashed = tmp_path / "crashed"
        shutil.copytree(tmp_path / "vector", crashed / "vector")
    directory = _index_dir(crashed, "docs")
    newest = max(p for p in directory.glob("wal-*.log") if p.stat().st_size)
    with open(newest, "ab") as out:
        out.write(b"\x10\x00\x00\x00garbage-half-frame")
    with caplog.at_level(logging.WARNING, logger="strata.vector.storage"):
        with open_vector(data_dir=crashed) as stub:
            assert _dump(stub, "docs") == before
            stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", vectors=[vec("after", [1.0] * 8)]))
            after = _dump(stub, "docs")
    assert any("torn" in r.getMessage() for r in caplog.records)
    with open_vector(data_dir=crashed) as stub:
        assert _dump(stub, "docs") == after


def test_deleted_index_stays_deleted_and_names_are_reusable(open_vector: Callable[..., Any], tmp_path: Path) -> None:
    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="gone", dimensions=8, metric=pb.METRIC_COSINE))
        _workload(stub, "gone", 2)
        stub.DeleteIndex(pb.DeleteIndexRequest(name="gone"))
        stub.CreateIndex(pb.CreateIndexRequest(name="kept", dimensions=3, metric=pb.METRIC_COSINE))
    assert sorted(p.name for p in (tmp_path / "vector" / "indexes").iterdir()) == ["kept"]
    with open_vector() as stub:
        names = [i.name for i in stub.ListIndexes(pb.ListIndexesRequest()).indexes]
        assert names == ["kept"]


def test_a_log_in_the_earlier_frame_layout_replays(open_vector: Callable[..., Any], tmp_path: Path) -> None:
    """Logs written before namespaces and ids were logged apart (keys as [namespace, id] pairs,
    metadata serialised by the standard library, which wrote NaN) still replay after an upgrade."""
    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=4, metric=pb.METRIC_EUCLIDEAN))
    directory = _index_dir(tmp_path, "docs")
    values = np.arange(8, dtype="<f4").reshape(2, 4)

    def frame(header: bytes, body: bytes = b"") -> bytes:
        payload = struct_.pack("<I", len(header)) + header + body
        return struct_.pack("<II", len(payload), zlib.crc32(payload)) + payload

    old = [
        frame(b'{"m":1,"op":"upsert","k":[["n1","a"],["","b"]],"md":[{"x":1},{"s":NaN}]}', values.tobytes()),
        frame(b'{"m":2,"op":"delete","k":[["","b"]]}'),
    ]
    (log,) = directory.glob("wal-*.log")
    log.write_bytes(b"".join(old))
    with open_vector() as stub:
        assert _dump(stub, "docs") == {("n1", "a"): ([0.0, 1.0, 2.0, 3.0], {"x": 1})}
        assert stub.GetIndex(pb.GetIndexRequest(name="docs")).index.last_mutation_id == 2


def test_writes_and_reads_go_on_while_a_snapshot_is_built(
    open_vector: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes wait only for the snapshot's capture; building and writing the file (O(N))
    happens while they carry on, and a restart then finds both."""
    building, release = threading.Event(), threading.Event()
    write = snapshots.write

    def held_write(*args: Any, **kwargs: Any) -> None:
        building.set()
        assert release.wait(30)
        write(*args, **kwargs)

    monkeypatch.setattr(snapshots, "write", held_write)
    with open_vector(wal_max_entries=1, snapshot_interval_seconds=0.2) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=4, metric=pb.METRIC_EUCLIDEAN))
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", vectors=[vec("first", [1, 0, 0, 0])]))
        assert building.wait(10), "no snapshot started"
        try:
            for n in range(20):  # while the snapshot is held mid-build
                stub.UpsertVectors(
                    pb.UpsertVectorsRequest(index_name="docs", vectors=[vec(f"v{n}", [0, 1, n, 0])]), timeout=5
                )
            hits = stub.Query(pb.QueryRequest(index_name="docs", vector=[0, 1, 19, 0], top_k=1), timeout=5)
            assert [m.id for m in hits.matches] == ["v19"]
        finally:
            release.set()
        before = _dump(stub, "docs")
    with open_vector() as stub:
        assert _dump(stub, "docs") == before
        assert len(before) == 21


def test_a_snapshot_in_the_first_format_loads(open_vector: Callable[..., Any], tmp_path: Path) -> None:
    """Format 1 held the FAISS index serialised beside the records: it still loads."""
    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=4, metric=pb.METRIC_DOT_PRODUCT))
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    index.add_with_ids(np.array([[1, 0, 0, 0], [0, 2, 0, 0]], dtype=np.float32), np.array([0, 2], dtype=np.int64))
    state = {
        "format": 1,
        "mutation_id": 3,
        "next_id": 3,
        "index": faiss.serialize_index(index),
        "records": [(0, "", "a", {"tag": "x"}), (2, "n", "b", {"tag": "y"})],
        "raw": None,
        "dead": [1],
        # Stale on purpose: postings are rebuilt from the records, never read.
        "postings": pickle.dumps({"tag": {("s", "x"): {2}, ("s", "y"): {0}}}),
    }
    (_index_dir(tmp_path, "docs") / "snapshot.bin").write_bytes(pickle.dumps(state))
    with open_vector() as stub:
        assert _dump(stub, "docs") == {
            ("", "a"): ([1.0, 0.0, 0.0, 0.0], {"tag": "x"}),
            ("n", "b"): ([0.0, 2.0, 0.0, 0.0], {"tag": "y"}),
        }
        found = stub.Query(
            pb.QueryRequest(index_name="docs", vector=[0, 1, 0, 0], top_k=2, filter=struct({"tag": "y"}))
        )
        assert [(m.id, m.score) for m in found.matches] == [("b", 2.0)]
        assert stub.GetIndex(pb.GetIndexRequest(name="docs")).index.last_mutation_id == 3


def test_a_large_snapshot_reaches_the_disk_as_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not all at the end: the log's fsyncs would queue behind its dirty pages."""
    from services.vector.backends import faiss_storage as storage

    synced: list[int] = []
    real = storage.os.fdatasync
    monkeypatch.setattr(storage.os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    pieces = [bytes([n]) * (3 * 1024 * 1024) for n in range(10)]  # 30 MiB
    target = tmp_path / "snapshot.bin"

    def write(out: Any) -> None:
        for piece in pieces:
            pickle.dump(piece, out, protocol=5)

    storage.write_atomically(target, write)
    assert len(synced) >= 3  # every 8 MiB of the 30
    with open(target, "rb") as source:
        assert [pickle.load(source) for _ in pieces] == pieces
    assert not target.with_name("snapshot.bin.tmp").exists()


def test_where_there_is_no_fdatasync_writes_are_fsynced_and_survive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS has no os.fdatasync: the log falls back to fsync."""
    import os

    from services.vector.backends.faiss_index import FaissIndex
    from services.vector.model import IndexSpec, Metric, VectorBatch, keys_in

    monkeypatch.delattr(os, "fdatasync", raising=False)
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    spec = IndexSpec("docs", 4, Metric.EUCLIDEAN)
    index = FaissIndex(spec, tmp_path)
    index.load()
    keys = keys_in("", ["a", "b"])
    values = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32)
    before = len(synced)
    index.write(VectorBatch(keys, values, [{}, {}], ["{}", "{}"]), True)
    assert len(synced) > before  # the log record was forced to disk before the write returned
    index.close()
    reopened = FaissIndex(spec, tmp_path)
    reopened.load()
    assert [record.key for record in reopened.get_keys(keys)] == keys
    reopened.close()


@pytest.mark.parametrize("namespaces", [["", ""], ["a", "b"]])
def test_a_frame_built_ahead_is_the_frame_built_in_the_group_commit(namespaces: list[str]) -> None:
    """Writes build their frame before queueing and the group commit only numbers it: the bytes
    must be those of a frame built whole, CRC included, so that replay reads either alike."""
    from services.vector.backends import faiss_storage as storage
    from services.vector.model import make_key

    keys = [make_key((namespace, f"v{i}")) for i, namespace in enumerate(namespaces)]
    values = np.arange(8, dtype=np.float32).reshape(2, 4)
    texts = ['{"a":1}', '{"b":[2,"x"]}']
    whole = storage.LogEntry(7, "upsert", keys, values, [{}, {}], texts)
    ahead = storage.LogEntry(
        7, "upsert", keys, values, [{}, {}], texts, framed=storage.frame_ahead("upsert", keys, values, texts)
    )
    assert b"".join(map(bytes, ahead.frame())) == b"".join(map(bytes, whole.frame()))
    frame = b"".join(map(bytes, ahead.frame()))
    length, crc = struct_.unpack_from("<II", frame)
    assert crc == zlib.crc32(frame[8:]) and length == len(frame) - 8
    decoded = storage.LogEntry.decode(frame[8:], 4)
    assert (decoded.mutation_id, decoded.keys, decoded.values.tolist()) == (7, keys, values.tolist())
