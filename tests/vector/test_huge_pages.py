"""The FAISS backend keeps an index's stored vectors on transparent huge pages as the index grows."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest

from services.vector.backends import faiss_memory
from services.vector.backends.faiss_index import FaissIndex
from services.vector.backends.faiss_memory import HUGE_PAGE, HugePages, _stored_vectors
from services.vector.model import IndexSpec, Metric, VectorBatch, keys_in
from strata.vector.v1 import vector_pb2 as pb
from tests.contract.vector.helpers import vec

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_bytes_in(address: int, size: int) -> int:
    """AnonHugePages of the mappings that overlap [address, address + size)."""
    total, overlaps = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and ":" not in head:
            low, high = (int(x, 16) for x in head.split("-"))
            overlaps = low < address + size and address < high
        elif overlaps and line.startswith("AnonHugePages:"):
            total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_stored_vectors_move_to_huge_pages_as_the_index_grows() -> None:
    if not THP.exists() or "[never]" in THP.read_text():
        pytest.skip("transparent huge pages are disabled on this kernel")
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(384))
    pages = HugePages()
    rng = np.random.default_rng(1)
    for start in range(0, 40_000, 5_000):  # 61 MB, grown (and moved) several times like a live index
        index.add_with_ids(rng.random((5_000, 384), dtype=np.float32), np.arange(start, start + 5_000))
        pages.advise(index)
    assert pages.pending() > 0
    while pages.pending():
        pages.collapse(index, 8 * 1024 * 1024)  # a bounded stretch at a time, as the maintenance tick does
    region = _stored_vectors(index)
    assert region is not None
    address, size = region
    assert size == 40_000 * 384 * 4
    # All but the unaligned ends (under 2 MiB each) of the storage sit on huge pages.
    assert huge_bytes_in(address, size) >= size - 4 * 1024 * 1024
    # Searching still sees every vector exactly.
    _, ids = index.search(rng.random((1, 384), dtype=np.float32), 40_000)
    assert sorted(ids[0].tolist()) == list(range(40_000))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
@pytest.mark.parametrize("huge_pages", [True, False])
def test_an_index_marks_its_storage_only_when_told_to(tmp_path: Path, huge_pages: bool) -> None:
    spec = IndexSpec("docs", 384, Metric.DOT_PRODUCT)
    index = FaissIndex(spec, tmp_path, huge_pages=huge_pages)
    index.load()
    rng = np.random.default_rng(2)
    for start in range(0, 8_000, 1_000):  # 12 MB of storage
        keys = keys_in("", [f"v{i}" for i in range(start, start + 1_000)])
        metadata: list[dict[str, Any]] = [{}] * len(keys)
        index.write(VectorBatch(keys, rng.random((1_000, 384), dtype=np.float32), metadata, ["{}"] * len(keys)), True)
    assert (index._huge_pages.pending() > 0) is huge_pages
    assert index.tidy_memory(1 << 30) is False  # nothing left to move (or nothing asked)
    index.close()


def test_the_backend_keeps_huge_pages_as_its_settings_say(tmp_path: Path) -> None:
    from services.vector.backends.faiss import FaissBackend
    from services.vector.config import VectorSettings

    for on in (True, False):
        assert FaissBackend(VectorSettings(data_dir=tmp_path, huge_pages_on=on))._madvise is on


def _kernel() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_an_index_whose_storage_moved_as_it_grew_keeps_it_on_huge_pages(tmp_path: Path) -> None:
    """`Capacity` grows the storage by moving its pages; moved or not, they end up huge."""
    if not THP.exists() or "[never]" in THP.read_text():
        pytest.skip("transparent huge pages are disabled on this kernel")
    index = FaissIndex(IndexSpec("docs", 384, Metric.DOT_PRODUCT), tmp_path, huge_pages=True)
    index.load()
    rng = np.random.default_rng(3)
    for start in range(0, 40_000, 2_000):  # 61 MB, grown by realloc about six times
        keys = keys_in("", [f"v{i}" for i in range(start, start + 2_000)])
        metadata: list[dict[str, Any]] = [{}] * len(keys)
        index.write(VectorBatch(keys, rng.random((2_000, 384), dtype=np.float32), metadata, ["{}"] * len(keys)), True)
    while index.tidy_memory(8 * 1024 * 1024):
        pass
    region = _stored_vectors(index._index)
    assert region is not None
    address, size = region
    assert huge_bytes_in(address, size) >= size - 4 * 1024 * 1024
    if _kernel() >= (6, 7):  # mappings of whole huge pages are placed on a huge-page boundary
        low, high = _mapping_of(address)
        assert low % HUGE_PAGE == 0 and (high - low) % HUGE_PAGE == 0
    index.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_marking_huge_pages_leaves_the_storage_one_mapping(tmp_path: Path) -> None:
    """The mark covers the storage's whole buffer: marking only the huge pages inside it split
    its mapping in three, `mremap` cannot move a range over several mappings, and every growth
    then copied the whole storage while queries waited (68 ms at 268 MB)."""
    if not THP.exists() or "[never]" in THP.read_text() or faiss_memory._MADVISE is None:
        pytest.skip("transparent huge pages are disabled on this kernel")
    index = FaissIndex(IndexSpec("docs", 384, Metric.DOT_PRODUCT), tmp_path, huge_pages=True)
    index.load()
    rng = np.random.default_rng(5)
    for start in range(0, 40_000, 4_000):  # 61 MB: its own mapping, grown several times
        keys = keys_in("", [f"v{i}" for i in range(start, start + 4_000)])
        metadata: list[dict[str, Any]] = [{}] * len(keys)
        index.write(VectorBatch(keys, rng.random((4_000, 384), dtype=np.float32), metadata, ["{}"] * len(keys)), True)
        storage = faiss_memory._storage(index._index)
        address, room = int(storage.codes.data()), faiss_memory._room(storage.codes.owned_data)
        if room >= 32 * 1024 * 1024:  # past glibc's largest heap block: mapped on its own
            low, high = _mapping_of(address)
            assert low <= address and address + room <= high, f"{start}: the storage spans several mappings"
    index.close()


def _mapping_of(address: int) -> tuple[int, int]:
    for line in Path("/proc/self/maps").read_text().splitlines():
        low, high = (int(x, 16) for x in line.split()[0].split("-"))
        if low <= address < high:
            return low, high
    raise AssertionError(f"{address:#x} is not mapped")


def test_failing_upkeep_never_stops_snapshots(
    open_vector: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def broken(self: FaissIndex, limit: int) -> bool:
        calls.append(limit)
        raise RuntimeError("madvise exploded")

    monkeypatch.setattr(FaissIndex, "tidy_memory", broken)
    with open_vector(wal_max_entries=1, snapshot_interval_seconds=0.2) as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=4, metric=pb.METRIC_COSINE))
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", vectors=[vec("a", [1, 0, 0, 0])]))
        snapshot = tmp_path / "vector" / "indexes" / "docs" / "snapshot.bin"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not snapshot.exists():
            time.sleep(0.05)
        assert calls, "the maintenance tick never tried the upkeep"
        assert snapshot.exists()


@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_service_restarts_itself_with_huge_pages_unless_told_not_to(tmp_path: Path, setting: str) -> None:
    from services.runtime.memory import huge_pages_would_help
    from tests.support.servers import ServerProcess, free_port

    if not huge_pages_would_help({k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}):
        pytest.skip("this machine needs no asking (not Linux with glibc 2.35+ and THP mode 'madvise')")
    address = f"127.0.0.1:{free_port()}"
    env = {"STRATA_DATA_DIR": str(tmp_path), "STRATA_VECTOR_LISTEN": address, "STRATA_VECTOR_HUGE_PAGES": setting}
    with ServerProcess("services.vector", env, address, tmp_path / "server.log") as server:
        assert server.proc is not None
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
        asked = any(line.startswith(b"GLIBC_TUNABLES=") and b"glibc.malloc.hugetlb=1" in line for line in environ)
        assert asked is (setting == "true")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="transparent huge pages are a Linux feature")
def test_storage_is_advised_once_per_buffer_and_only_its_written_part_collapsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marking the storage is one call per buffer, not per write (each call holds the process's
    memory map lock); collapsing covers only what is written."""
    if not THP.exists() or "[never]" in THP.read_text() or faiss_memory._MADVISE is None:
        pytest.skip("transparent huge pages are disabled on this kernel")
    calls: list[tuple[int, int, int]] = []
    real = faiss_memory._MADVISE

    def counting(address: int, length: int, advice: int) -> int:
        calls.append((address, length, advice))
        return int(real(address, length, advice))

    monkeypatch.setattr(faiss_memory, "_MADVISE", counting)
    index = FaissIndex(IndexSpec("docs", 384, Metric.DOT_PRODUCT), tmp_path, huge_pages=True)
    index.load()
    rng = np.random.default_rng(4)
    buffers = set()
    for start in range(0, 30_000, 1_000):  # 46 MB in 30 writes
        keys = keys_in("", [f"v{i}" for i in range(start, start + 1_000)])
        metadata: list[dict[str, Any]] = [{}] * len(keys)
        index.write(VectorBatch(keys, rng.random((1_000, 384), dtype=np.float32), metadata, ["{}"] * len(keys)), True)
        storage = faiss_memory._storage(index._index)
        buffers.add((int(storage.codes.data()), faiss_memory._room(storage.codes.owned_data)))
    advised = [call for call in calls if call[2] == faiss_memory.MADV_HUGEPAGE]
    assert 1 <= len(advised) <= len(buffers) < 15  # one per growth, not one per write
    region = _stored_vectors(index._index)
    assert region is not None
    address, size = region
    assert 0 < index._huge_pages.pending() <= size
    calls.clear()
    while index.tidy_memory(8 * 1024 * 1024):
        pass
    assert index._huge_pages.pending() == 0
    collapsed = [call for call in calls if call[2] == faiss_memory.MADV_COLLAPSE]
    assert collapsed and max(start + length for start, length, _ in collapsed) <= address + size
    index.close()
