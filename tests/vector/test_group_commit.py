"""Group commit: concurrent writes share fsyncs, and each still sees the ones before it."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from services.vector.backends import faiss_storage
from services.vector.backends.faiss_index import FaissIndex
from services.vector.filters import parse
from services.vector.model import IndexSpec, Metric, VectorBatch, VectorKey

SPEC = IndexSpec("g", 4, Metric.EUCLIDEAN)


def _batch(ids: list[str], tag: int = 0) -> VectorBatch:
    metadata = [{"tag": tag} for _ in ids]
    return VectorBatch(
        [VectorKey("", i) for i in ids],
        np.ones((len(ids), 4), dtype=np.float32),
        metadata,
        [f'{{"tag":{tag}}}' for _ in ids],
    )


@pytest.fixture
def slow_fsync(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.01)  # a slow disk, so writers pile up behind the first fsync
        real(fd)

    monkeypatch.setattr(faiss_storage.os, "fdatasync", fdatasync)
    return calls


def _open(tmp_path: Path) -> FaissIndex:
    index = FaissIndex(SPEC, tmp_path)
    index.load()
    return index


def test_concurrent_writes_share_fsyncs_and_get_distinct_mutation_ids(tmp_path: Path, slow_fsync: list[int]) -> None:
    index = _open(tmp_path)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: index.write(_batch([f"v{i}"]), replace=True), range(64)))
    assert sorted(r.mutation_id for r in results) == list(range(1, 65))
    assert len(slow_fsync) < 64
    assert index.info().vector_count == 64
    index.close()
    reopened = _open(tmp_path)
    assert (reopened.info().vector_count, reopened.info().last_mutation_id) == (64, 64)


def test_inserts_of_one_id_in_one_group_insert_it_once(tmp_path: Path, slow_fsync: list[int]) -> None:
    index = _open(tmp_path)
    start = threading.Barrier(16)

    def insert(_: int) -> int:
        start.wait()
        return index.write(_batch(["same"]), replace=False).count

    with ThreadPoolExecutor(16) as pool:
        counts = list(pool.map(insert, range(16)))
    assert sorted(counts) == [0] * 15 + [1]
    assert index.info().vector_count == 1


def test_delete_by_filter_sees_writes_queued_before_it(tmp_path: Path, slow_fsync: list[int]) -> None:
    index = _open(tmp_path)
    index.write(_batch(["old"], tag=1), replace=True)
    # Hold the writer lock so the next writes queue up and commit as one group, in order.
    results: dict[str, int] = {}
    with index._writer:
        threads = [
            threading.Thread(target=lambda: results.__setitem__("up", index.write(_batch(["new"], tag=1), True).count)),
        ]
        threads[0].start()
        while not index._queue:
            time.sleep(0.001)
        threads.append(
            threading.Thread(
                target=lambda: results.__setitem__("del", index.delete_matching(parse({"tag": 1}), None).count)
            )
        )
        threads[1].start()
        while len(index._queue) < 2:
            time.sleep(0.001)
    for thread in threads:
        thread.join()
    assert results == {"up": 1, "del": 2}
    assert index.info().vector_count == 0


def test_a_failed_log_write_fails_the_group_and_refuses_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.runtime.errors import Unavailable

    index = _open(tmp_path)
    index.write(_batch(["kept"]), replace=True)

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(faiss_storage.os, "fdatasync", full_disk)
    with pytest.raises(OSError, match="No space"):
        index.write(_batch(["lost"]), replace=True)
    monkeypatch.undo()
    with pytest.raises(Unavailable, match="restart"):
        index.write(_batch(["later"]), replace=True)
    assert [r.key.id for r in index.get_keys([VectorKey("", "kept"), VectorKey("", "lost")])] == ["kept"]


def _stall_first_apply(index: FaissIndex, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """The first apply waits until released: (applying, release)."""
    applying, release = threading.Event(), threading.Event()
    real = index._apply

    def apply(entry: faiss_storage.LogEntry, vectors: np.ndarray | None = None) -> None:
        if not applying.is_set():
            applying.set()
            assert release.wait(10)
        real(entry, vectors)

    monkeypatch.setattr(index, "_apply", apply)
    return applying, release


def test_writes_logged_while_a_group_applies_see_its_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _open(tmp_path)
    applying, release = _stall_first_apply(index, monkeypatch)
    with ThreadPoolExecutor(4) as pool:
        upsert = pool.submit(index.write, _batch(["k"], tag=1), True)
        assert applying.wait(10)
        # The upsert is logged but not applied: the next writes are planned and logged meanwhile.
        insert = pool.submit(index.write, _batch(["k"], tag=2), False)
        while index._logged_mutation_id < 2:
            time.sleep(0.001)
        assert not upsert.done() and not insert.done()
        assert index.info().last_mutation_id == 0  # nothing is visible before it is applied
        # Two groups deep: this one waits for `_writer` until the insert's group can apply.
        delete = pool.submit(index.delete_keys, [VectorKey("", "k")])
        release.set()
        results = [upsert.result(10), insert.result(10), delete.result(10)]
    assert [(r.mutation_id, r.count) for r in results] == [(1, 1), (2, 0), (3, 1)]
    assert [key.id for key in results[1].skipped] == ["k"]
    assert (index.info().vector_count, index.info().last_mutation_id) == (0, 3)
    index.close()
    reopened = _open(tmp_path)
    assert (reopened.info().vector_count, reopened.info().last_mutation_id) == (0, 3)


def test_delete_by_filter_waits_for_the_group_applying(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = _open(tmp_path)
    applying, release = _stall_first_apply(index, monkeypatch)
    with ThreadPoolExecutor(2) as pool:
        upsert = pool.submit(index.write, _batch(["a", "b"], tag=1), True)
        assert applying.wait(10)
        delete = pool.submit(index.delete_matching, parse({"tag": 1}), None)
        time.sleep(0.05)
        assert not delete.done()
        release.set()
        assert upsert.result(10).count == 2
        assert delete.result(10).count == 2
    assert index.info().vector_count == 0


def test_a_failed_apply_fails_its_writes_and_refuses_later_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.runtime.errors import Unavailable

    index = _open(tmp_path)
    index.write(_batch(["kept"]), replace=True)

    def broken(entry: faiss_storage.LogEntry, vectors: np.ndarray | None = None) -> None:
        raise MemoryError("out of memory")

    monkeypatch.setattr(index, "_apply", broken)
    with pytest.raises(MemoryError):
        index.write(_batch(["lost"]), replace=True)
    monkeypatch.undo()
    with pytest.raises(Unavailable, match="restart"):
        index.write(_batch(["later"]), replace=True)
    assert index.info().vector_count == 1
    index.close()
    # The log holds the write whose apply failed: a restart applies it.
    assert _open(tmp_path).info().vector_count == 2
