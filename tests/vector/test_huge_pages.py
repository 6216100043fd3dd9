"""The FAISS backend keeps an index's stored vectors on transparent huge pages as the index grows."""

from __future__ import annotations

import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from services.vector.backends.faiss_memory import HugePages, _stored_vectors

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
