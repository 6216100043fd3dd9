"""What a snapshot of one FAISS index holds, and how it is taken without stopping writes.

Writes wait only while `capture` takes references and small copies (~1-4 ms at 100k
vectors, mostly the records dict); `write` then puts the O(N) rest into the file while writes
carry on. That is sound because nothing captured changes afterwards: records are immutable
tuples (the dict holding them is copied), tombstones are copied, and a flat index only ever appends,
so its first `ntotal` rows stay as they were (compaction swaps in a new index object and
leaves the captured one alone). Its rows are read in short steps under the index's read
lock, because an append may move the storage. An HNSW index only appends its vectors and ids
too (it never compacts), but changes its graph in place on every add: the capture copies the
graph's arrays (about a tenth of the index at M=16 and 384 dimensions; 0.8 ms at 60k vectors
where cloning the whole index took 45-57 ms), and `write` puts the copy together with the
vectors and ids read as a flat index's into the index it serialises.

Format 4 (this one) is a header, then the records, the values and (HNSW) the serialised
graph, in pieces pickled one by one. A record is (internal id, namespace, id, metadata as JSON
text), as the index holds it (`faiss_records`); formats 1-3 held the metadata as dicts. It
keeps a flat index as its vectors alone (the caller's values, in record order) and rebuilds it
on load: half the size of format 1, one pickle that also held the FAISS index serialised (and,
for cosine, both normalised and caller's values). Since format 3 it holds no postings: a load
rebuilds them from the records' metadata (~0.4 ms per 1,000 vectors), where format 2 pickled
every posting set during the capture (6-7 ms per 100k vectors with writes waiting). Postings
in older snapshots are ignored the same way.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from services.vector.backends.faiss_raw import Captured, RawValues, find_rows
from services.vector.backends.faiss_storage import Sink

FORMAT = 4
READABLE_FORMATS = (1, 2, 3, 4)
# Rows copied per hold of the read lock (~6 MB at 384 dimensions: a few milliseconds).
ROWS_PER_STEP = 4096
# Pieces of the file, each pickled in a few milliseconds.
RECORDS_PER_PIECE = 2000
BYTES_PER_PIECE = 8 * 1024 * 1024


@dataclass(frozen=True)
class Capture:
    mutation_id: int
    next_id: int
    records: dict[int, Any]  # internal id -> ((namespace, id), metadata JSON): a copy of the dict
    raw: Captured | None  # cosine: the caller's values (`RawValues.capture`)
    dead: list[int]
    index: Any  # the FAISS index object as of the capture
    ntotal: int
    graph: Graph | None  # HNSW: its graph as of the capture; None for flat


@dataclass(frozen=True)
class Graph:
    """An HNSW graph's arrays, copied."""

    levels: np.ndarray
    offsets: np.ndarray
    neighbors: np.ndarray
    entry_point: int
    max_level: int


def _copied(vector: Any, dtype: Any) -> np.ndarray:
    size = vector.size()
    return faiss.rev_swig_ptr(vector.data(), size).copy() if size else np.empty(0, dtype=dtype)


def _graph(index: Any) -> Graph:
    hnsw: Any = faiss.downcast_index(index.index).hnsw  # type: ignore[attr-defined]
    return Graph(
        levels=_copied(hnsw.levels, np.int32),
        offsets=_copied(hnsw.offsets, np.uint64),
        neighbors=_copied(hnsw.neighbors, np.int32),
        entry_point=hnsw.entry_point,
        max_level=hnsw.max_level,
    )


def capture(
    *,
    mutation_id: int,
    next_id: int,
    records: dict[int, Any],
    dead: set[int],
    index: Any,
    raw: Captured | None,
    hnsw: bool,
) -> Capture:
    """The cheap part, run while writes wait."""
    return Capture(
        mutation_id=mutation_id,
        next_id=next_id,
        records=dict(records),
        raw=raw,
        dead=sorted(dead) if hnsw else [],  # a rebuilt flat index holds no tombstones
        index=index,
        ntotal=index.ntotal,
        graph=_graph(index) if hnsw else None,
    )


def write(snap: Capture, out: Sink, *, read_lock: Callable[[], AbstractContextManager[Any]]) -> None:
    """Write the snapshot while writes carry on: a header, then the records, the values and the
    HNSW graph in pieces. Each piece is pickled on its own: pickling holds the GIL for as long as
    it runs, and one pickle of 100k records would stop every other thread for ~0.4 s."""
    internal = list(snap.records)
    raw = None
    if internal and snap.raw is not None:
        raw = RawValues.gather(snap.raw, internal)
    elif internal and snap.graph is None:
        raw = _flat_rows(snap.index, snap.ntotal, np.asarray(internal, dtype=np.int64), read_lock)
    graph = None if snap.graph is None else faiss.serialize_index(_hnsw_index(snap, snap.graph, read_lock))
    header = {
        "format": FORMAT,
        "mutation_id": snap.mutation_id,
        "next_id": snap.next_id,
        "dead": snap.dead,
        "records": len(internal),
        "raw": None if raw is None else len(raw),
        "index": None if graph is None else len(graph),
    }
    pickle.dump(header, out, protocol=5)
    records = iter(snap.records.items())
    for _ in range(0, len(internal), RECORDS_PER_PIECE):
        piece = [(i, r[0][0], r[0][1], r[1]) for i, r in itertools.islice(records, RECORDS_PER_PIECE)]
        pickle.dump(piece, out, protocol=5)
    for array in (raw, graph):
        if array is not None:
            step = max(1, BYTES_PER_PIECE // max(1, array[:1].nbytes))
            for start in range(0, len(array), step):
                pickle.dump(array[start : start + step], out, protocol=5)


def read(path: Path) -> dict[str, Any]:
    """A snapshot file as one state: records, raw values (or None) and the serialised index (or None)."""
    with open(path, "rb") as source:
        state: dict[str, Any] = pickle.load(source)
        if state.get("format") == 1:  # the whole state in one pickle
            return state
        records: list[Any] = []
        while len(records) < state["records"]:
            records.extend(pickle.load(source))
        state["records"] = records
        for name in ("raw", "index"):
            if state[name] is not None:
                pieces, total = [], 0
                while total < state[name]:
                    pieces.append(pickle.load(source))
                    total += len(pieces[-1])
                state[name] = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
    return state


def _stored_ids(index: Any, ntotal: int, read_lock: Callable[[], AbstractContextManager[Any]]) -> np.ndarray:
    """The first `ntotal` internal ids of an IndexIDMap2, in the order it stores them."""
    with read_lock():
        return faiss.rev_swig_ptr(index.id_map.data(), ntotal).copy() if ntotal else np.empty(0, np.int64)


def _read_rows(
    flat: Any,
    dimensions: int,
    ntotal: int,
    read_lock: Callable[[], AbstractContextManager[Any]],
    take: Callable[[int, np.ndarray], object],
) -> None:
    """Hand the first `ntotal` vectors a flat index (or an HNSW index's storage) holds to `take`
    (first row, rows), a step at a time, each under the read lock: `take` must copy what it keeps."""
    for start in range(0, ntotal, ROWS_PER_STEP):
        stop = min(start + ROWS_PER_STEP, ntotal)
        with read_lock():  # re-read the address each step: an append may have moved the storage
            stored = faiss.rev_swig_ptr(flat.get_xb(), ntotal * dimensions).reshape(ntotal, dimensions)
            take(start, stored[start:stop])


def _flat_rows(
    index: Any, ntotal: int, wanted: np.ndarray, read_lock: Callable[[], AbstractContextManager[Any]]
) -> np.ndarray:
    """The stored vectors of the internal ids `wanted`, from an IndexIDMap2 over a flat index."""
    ids = _stored_ids(index, ntotal, read_lock)
    rows = np.empty((ntotal, index.d), dtype=np.float32)

    def take(start: int, step: np.ndarray) -> None:
        rows[start : start + len(step)] = step

    _read_rows(faiss.downcast_index(index.index), index.d, ntotal, read_lock, take)
    # Internal ids are added in increasing order and compaction keeps that order.
    positions, found = find_rows(ids, wanted)
    if not found.all():
        raise RuntimeError("a live vector is missing from the FAISS index: not writing a snapshot of it")
    return rows[positions]


def _hnsw_index(snap: Capture, graph: Graph, read_lock: Callable[[], AbstractContextManager[Any]]) -> Any:
    """The captured HNSW index, as an IndexIDMap2 of its own: the captured graph over the first
    `ntotal` vectors and ids of the live one (which only ever appends them)."""
    live: Any = faiss.downcast_index(snap.index.index)
    inner: Any = faiss.IndexHNSWFlat(snap.index.d, live.hnsw.nb_neighbors(1), live.metric_type)
    wrapped = faiss.IndexIDMap2(inner)  # it must wrap an empty index
    storage = faiss.downcast_index(inner.storage)
    _read_rows(
        faiss.downcast_index(live.storage), snap.index.d, snap.ntotal, read_lock, lambda _, step: storage.add(step)
    )
    hnsw: Any = inner.hnsw
    for name in ("assign_probas", "cum_nneighbor_per_level"):  # fixed when the index was made
        faiss.copy_array_to_vector(faiss.vector_to_array(getattr(live.hnsw, name)), getattr(hnsw, name))
    faiss.copy_array_to_vector(graph.levels, hnsw.levels)
    faiss.copy_array_to_vector(graph.offsets, hnsw.offsets)
    hnsw.neighbors.resize(len(graph.neighbors))
    if len(graph.neighbors):
        faiss.rev_swig_ptr(hnsw.neighbors.data(), len(graph.neighbors))[:] = graph.neighbors
    hnsw.entry_point, hnsw.max_level = graph.entry_point, graph.max_level
    hnsw.efConstruction, hnsw.efSearch = live.hnsw.efConstruction, live.hnsw.efSearch
    inner.ntotal = wrapped.ntotal = snap.ntotal
    faiss.copy_array_to_vector(_stored_ids(snap.index, snap.ntotal, read_lock), wrapped.id_map)
    wrapped.construct_rev_map()
    return wrapped
