"""An index's vector storage grows before the add that needs it, in place or by moving its
pages (`realloc`), not by FAISS copying every stored vector while queries wait."""

from __future__ import annotations

import contextlib
import mmap
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from services.vector.backends import faiss_memory
from services.vector.backends.faiss_index import FaissIndex, SearchRequest
from services.vector.backends.faiss_memory import Capacity, _mapped_size, _pointers, _storage, _stored_vectors
from services.vector.model import HnswParams, IndexSpec, IndexType, Metric, VectorBatch, keys_in
from tests.support.process_readings import process_memory, reset_peak_memory, run_in_fresh_process

DIMS = 16


class Exclusive:
    """A stand-in for the index's exclusive lock that counts how often it is taken."""

    def __init__(self) -> None:
        self.taken = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        self.taken += 1
        yield


def _address(index: Any) -> int:
    region = _stored_vectors(index)
    return 0 if region is None else region[0]


def _room(index: Any) -> int:
    """Bytes the storage's buffer holds, used or not."""
    begin, _, stored = _pointers(_storage(index).codes.owned_data)
    return int(stored - begin)


def test_this_faiss_build_lets_the_storage_grow_without_a_copy() -> None:
    """The FAISS wheel the project installs lays std::vector out as three pointers and allocates
    with the C library's malloc; were that to change, the storage would quietly grow FAISS's way
    again, and this says so."""
    assert faiss_memory._GROWS


def test_reserve_doubles_the_storage_once_and_later_adds_fit_without_moving_it() -> None:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS))
    rng = np.random.default_rng(1)
    first = rng.random((100, DIMS), dtype=np.float32)
    index.add_with_ids(first, np.arange(100))
    capacity, exclusive = Capacity(), Exclusive()

    capacity.reserve(index, 50, exclusive)  # 150 rows needed: grows to 200 (twice the 100 held)
    assert exclusive.taken == 1 and _room(index) == 200 * 4 * DIMS
    grown = _address(index)
    for start in range(100, 200, 25):  # fills the reserved room: FAISS never reallocates
        capacity.reserve(index, 25, exclusive)
        index.add_with_ids(rng.random((25, DIMS), dtype=np.float32), np.arange(start, start + 25))
        assert _address(index) == grown
    assert exclusive.taken == 1

    capacity.reserve(index, 1, exclusive)  # full: grows again
    assert exclusive.taken == 2 and _room(index) == 400 * 4 * DIMS
    # The vectors held before every move are intact.
    assert np.array_equal(index.reconstruct_batch(np.arange(100)), first)
    assert index.ntotal == 200


def test_an_empty_storage_gets_room_for_exactly_the_first_add() -> None:
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS))
    capacity, exclusive = Capacity(), Exclusive()
    capacity.reserve(index, 0, exclusive)
    assert exclusive.taken == 0
    capacity.reserve(index, 10, exclusive)
    assert exclusive.taken == 1 and _room(index) == 10 * 4 * DIMS
    index.add_with_ids(np.ones((10, DIMS), np.float32), np.arange(10))
    assert index.ntotal == 10 and np.array_equal(index.reconstruct(3), np.ones(DIMS, np.float32))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self and relies on mremap")
def test_a_large_storage_grows_without_copying_its_vectors() -> None:
    """glibc keeps a block this large in a mapping of its own and moves it with mremap: growing
    a 128 MiB storage never has a second copy of it resident (FAISS's own growth copies all of it
    into a new buffer, so the peak is the storage twice). Measured in an interpreter of its own."""
    run_in_fresh_process(check_large_growth)


def check_large_growth() -> None:
    rows = 128 * 1024 * 1024 // (4 * 4096)
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(4096))
    index.add_with_ids(np.ones((rows, 4096), np.float32), np.arange(rows))  # one add: no room left
    assert _room(index) == rows * 4096 * 4
    reset_peak_memory()
    before = process_memory("VmRSS")
    Capacity().reserve(index, 1, Exclusive())
    assert _room(index) == _mapped_size(2 * rows * 4096 * 4)
    assert process_memory("VmHWM") - before < 64 * 1024 * 1024  # the room ahead it faults in, at most 32 MiB
    index.add_with_ids(np.full((1, 4096), 2, np.float32), np.array([rows]))
    assert np.array_equal(index.reconstruct(rows - 1), np.ones(4096, np.float32))
    assert np.array_equal(index.reconstruct(rows), np.full(4096, 2, np.float32))


@pytest.mark.parametrize(
    "spec",
    [
        IndexSpec("flat", DIMS, Metric.COSINE),
        IndexSpec("dot", DIMS, Metric.DOT_PRODUCT),
        IndexSpec("graph", DIMS, Metric.COSINE, IndexType.HNSW, HnswParams(m=8, ef_construction=40, ef_search=64)),
    ],
    ids=lambda spec: spec.name,
)
def test_faiss_never_grows_an_array_itself_while_readers_are_held_off(
    tmp_path: Path, spec: IndexSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No add may move (copy) the vectors, the ids or the HNSW graph: the index grew them
    beforehand."""
    index = FaissIndex(spec, tmp_path)
    index.load()
    add = faiss.IndexIDMap2.add_with_ids
    moved_by_add: list[list[int]] = []

    def buffers(index: Any) -> list[int]:
        arrays = [_storage(index).codes.owned_data, index.id_map]
        graph = getattr(faiss.downcast_index(index.index), "hnsw", None)
        if graph is not None:
            arrays += [graph.levels, graph.offsets, graph.neighbors.owned_data]
        return [int(_pointers(array)[0]) for array in arrays]

    def watched_add(self: Any, *args: Any) -> Any:
        before = buffers(self)
        try:
            return add(self, *args)
        finally:
            if buffers(self) != before:
                moved_by_add.append(before)

    monkeypatch.setattr(faiss.IndexIDMap2, "add_with_ids", watched_add)
    rng = np.random.default_rng(3)
    written: dict[str, np.ndarray] = {}
    for size in (1, 7, 100, 250, 1_000, 1_500):  # grows every array several times
        for _ in range(2):
            keys = keys_in("", [f"v{len(written) + i}" for i in range(size)])
            values = rng.random((size, DIMS), dtype=np.float32) + 0.01
            index.write(VectorBatch(keys, values, [{}] * size, ["{}"] * size), True)
            written.update(zip((key.id for key in keys), values, strict=True))
    assert moved_by_add == []
    assert index.info().vector_count == len(written)
    # Vectors written before each move read back, and are found, as written.
    for vid in ("v0", "v1", "v8", "v300", "v2000", f"v{len(written) - 1}"):
        [record] = index.get_keys(keys_in("", [vid]))
        assert np.allclose(record.values, written[vid], rtol=1e-6)
        if spec.metric is Metric.COSINE:
            assert index.search_many([SearchRequest(written[vid], 1, False, False)])[0][0].key.id == vid
    index.close()


def _resident_bytes(address: int) -> int:
    """Rss of the mapping holding `address`."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            low, high = (int(x, 16) for x in head.split("-"))
            inside = low <= address < high
        elif inside and line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    return 0


def _populating_done() -> None:
    faiss_memory._populating.submit(lambda: None).result()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_POPULATE_WRITE is Linux's")
def test_populate_later_faults_pages_in_without_changing_them() -> None:
    size = 32 * 1024 * 1024
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = np.frombuffer(region, dtype=np.uint8)
    address = view.ctypes.data
    view[:4096] = 7  # one page already written: populating must keep it
    assert _resident_bytes(address) < size // 2
    faiss_memory.populate_later(address, size)
    _populating_done()
    if not faiss_memory._populate_works:
        pytest.skip("this kernel has no MADV_POPULATE_WRITE (Linux 5.14+)")
    assert _resident_bytes(address) >= size
    assert view[:4096].tolist() == [7] * 4096 and not view[4096:].any()
    del view
    region.close()


def test_reserve_populates_the_room_ahead_of_the_adds_and_never_past_it(monkeypatch: pytest.MonkeyPatch) -> None:
    populated: list[tuple[int, int]] = []
    monkeypatch.setattr(faiss_memory, "populate_later", lambda address, length: populated.append((address, length)))
    monkeypatch.setattr(faiss_memory, "POPULATE_AHEAD", 64 * 4 * DIMS)  # 64 vectors ahead
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS))
    capacity, exclusive = Capacity(), Exclusive()
    rng = np.random.default_rng(4)
    for start in range(0, 1_000, 10):
        before = len(populated)
        capacity.reserve(index, 10, exclusive)
        region = _stored_vectors(index)
        for address, length in populated[before:]:  # asked for by this call
            if region is not None:
                assert region[0] + (start + 10) * 4 * DIMS <= address  # after what this add writes
                assert address + length <= region[0] + _room(index)  # never past the room
        index.add_with_ids(rng.random((10, DIMS), dtype=np.float32), np.arange(start, start + 10))
    assert sum(length for _, length in populated) >= 500 * 4 * DIMS  # most of the storage went ahead


def test_storage_that_cannot_grow_fails_the_write_and_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Out of memory while growing: the buffer and its pointers stay as they were, readers still
    find every vector, the index refuses writes until a restart, and the restart replays the
    logged write."""
    from services.runtime.errors import Unavailable

    spec = IndexSpec("flat", DIMS, Metric.DOT_PRODUCT)
    index = FaissIndex(spec, tmp_path)
    index.load()
    index.write(VectorBatch(keys_in("", ["a", "b"]), np.ones((2, DIMS), np.float32), [{}] * 2, ["{}"] * 2), True)
    before = [int(pointer) for pointer in _pointers(_storage(index._index).codes.owned_data)]
    monkeypatch.setattr(faiss_memory, "_REALLOC", lambda address, size: None)
    with pytest.raises(MemoryError):
        index.write(VectorBatch(keys_in("", ["c"]), np.full((1, DIMS), 2, np.float32), [{}], ["{}"]), True)
    assert [int(pointer) for pointer in _pointers(_storage(index._index).codes.owned_data)] == before
    assert sorted(record.key.id for record in index.get_keys(keys_in("", ["a", "b", "c"]))) == ["a", "b"]
    with pytest.raises(Unavailable, match="restart"):
        index.write(VectorBatch(keys_in("", ["d"]), np.ones((1, DIMS), np.float32), [{}], ["{}"]), True)
    index.close()
    monkeypatch.undo()
    again = FaissIndex(spec, tmp_path)
    again.load()
    assert sorted(record.key.id for record in again.get_keys(keys_in("", ["a", "b", "c", "d"]))) == ["a", "b", "c"]
    again.close()
