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

Format 5 (this one) is a pickled header, the values as raw little-endian float32 rows (one per
record, in record order, which is internal id order), the records in pieces pickled one by one,
then (HNSW) the index as FAISS writes it, streamed into and out of the file in pieces rather
than serialised to one block of bytes (which took a snapshot's peak, and a load's, to about three
times the index). A record is (internal id, namespace, id, metadata as JSON text), as the
index holds it (`faiss_records`); formats 1-3 held the metadata as dicts. It keeps a flat index
as its vectors alone (the caller's values) and rebuilds it on load: half the size of format 1,
one pickle that also held the FAISS index serialised (and, for cosine, both normalised and
caller's values). The values sit at an offset the header's size gives, unpickled, so a cosine
index reads its callers' values back from the file (`faiss_values`) rather than holding them in
memory, and a snapshot writes them a step at a time; format 4 pickled them, and the serialised
index, in pieces after the records. Since format 3 it
holds no postings: a load rebuilds them from the records' metadata (~0.4 ms per 1,000 vectors),
where format 2 pickled every posting set during the capture (6-7 ms per 100k vectors with writes
waiting). Postings in older snapshots are ignored the same way.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from services.vector.backends.faiss_storage import Sink
from services.vector.backends.faiss_values import find_rows

FORMAT = 5
READABLE_FORMATS = (1, 2, 3, 4, 5)
# Rows copied per hold of the read lock (~6 MB at 384 dimensions: a few milliseconds).
ROWS_PER_STEP = 4096
# Pieces of the file, each pickled in a few milliseconds.
RECORDS_PER_PIECE = 2000
# Bytes per write of values, and per bytes object FAISS hands over (or takes) for the HNSW
# index: each is a transient copy, so it is kept small beside the index.
BYTES_PER_PIECE = 1024 * 1024
# The header's "index" when (format 5) the FAISS index follows the records as FAISS writes it.
STREAMED = -1


@dataclass(frozen=True)
class Capture:
    mutation_id: int
    next_id: int
    ids: list[int]  # the internal ids of the records at the capture, increasing
    # Their records, ((namespace, id), metadata JSON) each, as of the capture, read a piece at a time.
    records: Callable[[list[int]], list[Any]]
    # Cosine: the caller's values of increasing internal ids, as of the capture (`ValueFiles`).
    values: Callable[[np.ndarray], np.ndarray] | None
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


_GRAPH_ARRAYS = (("levels", np.int32), ("offsets", np.uint64), ("neighbors", np.int32))
GraphRoom = tuple[np.ndarray, ...]


def graph_room(index: Any, read_lock: Callable[[], AbstractContextManager[Any]]) -> GraphRoom:
    """Arrays for an HNSW graph's arrays as they are now and some more, written through so that
    their memory is in place: made before writes stop for the capture, so that the capture
    copies into memory already faulted in (fresh memory faults in at 1.3-1.7 GB/s here, and a
    graph past glibc's largest heap block is fresh memory every time: ~85 ms for 1M vectors at
    M=16, against ~15 ms into memory in place). Only the sizes are read under the lock."""
    hnsw: Any = faiss.downcast_index(index.index).hnsw  # type: ignore[attr-defined]
    with read_lock():
        sizes = [getattr(hnsw, name).size() for name, _ in _GRAPH_ARRAYS]
    room = []
    for size, (_, dtype) in zip(sizes, _GRAPH_ARRAYS, strict=True):
        array = np.empty(size + size // 8 + 4096, dtype=dtype)  # adds may come before the capture
        array.fill(0)
        room.append(array)
    return tuple(room)


def _copied(vector: Any, dtype: Any, room: np.ndarray | None) -> np.ndarray:
    size = vector.size()
    if not size:
        return np.empty(0, dtype=dtype)
    source = faiss.rev_swig_ptr(vector.data(), size)
    if room is None or len(room) < size:
        return source.copy()
    np.copyto(room[:size], source)
    return room[:size]


def _graph(index: Any, room: GraphRoom | None = None) -> Graph:
    hnsw: Any = faiss.downcast_index(index.index).hnsw  # type: ignore[attr-defined]
    levels, offsets, neighbors = (
        _copied(getattr(hnsw, name), dtype, None if room is None else room[i])
        for i, (name, dtype) in enumerate(_GRAPH_ARRAYS)
    )
    return Graph(levels, offsets, neighbors, entry_point=hnsw.entry_point, max_level=hnsw.max_level)


def capture(
    *,
    mutation_id: int,
    next_id: int,
    ids: list[int],
    records: Callable[[list[int]], list[Any]],
    dead: set[int],
    index: Any,
    values: Callable[[np.ndarray], np.ndarray] | None,
    hnsw: bool,
    room: GraphRoom | None = None,
) -> Capture:
    """The cheap part, run while writes wait (`room`: see `graph_room`)."""
    return Capture(
        mutation_id=mutation_id,
        next_id=next_id,
        ids=ids,
        records=records,
        values=values,
        dead=sorted(dead) if hnsw else [],  # a rebuilt flat index holds no tombstones
        index=index,
        ntotal=index.ntotal,
        graph=_graph(index, room) if hnsw else None,
    )


@dataclass(frozen=True)
class Written:
    """Where a snapshot file holds the values: the rows of the increasing internal `ids`, one
    after another from byte `offset`."""

    ids: np.ndarray
    offset: int


def write(snap: Capture, out: Sink, *, read_lock: Callable[[], AbstractContextManager[Any]]) -> Written:
    """Write the snapshot while writes carry on: a header, the values, then the records and the
    HNSW graph in pieces. Each piece is pickled on its own: pickling holds the GIL for as long as
    it runs, and one pickle of 100k records would stop every other thread for ~0.4 s."""
    internal = np.array(snap.ids, dtype=np.int64)
    if np.any(internal[1:] <= internal[:-1]):  # the index adds records in id order: this is a safeguard
        internal = np.sort(internal)
    rows: Callable[[int, int], np.ndarray] | None = None
    if len(internal) and snap.values is not None:
        values = snap.values
        rows = lambda start, stop: values(internal[start:stop])  # noqa: E731 - read a step at a time
    elif len(internal) and snap.graph is None:
        rows = _flat_rows(snap.index, snap.ntotal, internal, read_lock)
    graph = None if snap.graph is None else _hnsw_index(snap, snap.graph, read_lock)
    header = {
        "format": FORMAT,
        "mutation_id": snap.mutation_id,
        "next_id": snap.next_id,
        "dead": snap.dead,
        "records": len(internal),
        "raw": None if rows is None else len(internal),
        "dimensions": snap.index.d,
        "index": None if graph is None else STREAMED,
    }
    head = pickle.dumps(header, protocol=5)
    out.write(head)
    offset = len(head)  # the values start right after the header
    if rows is not None:
        step = max(1, BYTES_PER_PIECE // (4 * snap.index.d))
        for start in range(0, len(internal), step):
            block = np.ascontiguousarray(rows(start, start + step), dtype="<f4")
            out.write(block.reshape(-1).view(np.uint8).data)
    for start in range(0, len(internal), RECORDS_PER_PIECE):
        ids = internal[start : start + RECORDS_PER_PIECE].tolist()
        piece = [(i, namespace, vid, text) for i, ((namespace, vid), text) in zip(ids, snap.records(ids), strict=True)]
        pickle.dump(piece, out, protocol=5)
    if graph is not None:  # FAISS writes it straight into the file, in pieces: no copy of it all in bytes
        faiss.write_index(graph, faiss.PyCallbackIOWriter(out.write, BYTES_PER_PIECE))  # type: ignore[attr-defined]
    return Written(internal if rows is not None else internal[:0], offset)


def read(path: Path) -> dict[str, Any]:
    """A snapshot file as one state: records, raw values (or None) and the FAISS index (or None,
    for a flat index kept as its values). From format 5 the values are mapped from the file,
    not read, and `raw_offset` says where they start."""
    with open(path, "rb") as source:
        state: dict[str, Any] = pickle.load(source)
        if state.get("format") == 1:  # the whole state in one pickle
            if state["index"] is not None:
                state["index"] = faiss.deserialize_index(state["index"])
            return state
        if state["format"] >= 5 and state["raw"]:
            offset, count, dimensions = source.tell(), state["raw"], state["dimensions"]
            state["raw"] = np.memmap(path, dtype="<f4", mode="r", offset=offset, shape=(count, dimensions))
            state["raw_offset"] = offset
            source.seek(offset + count * dimensions * 4)
        records: list[Any] = []
        while len(records) < state["records"]:
            records.extend(pickle.load(source))
        state["records"] = records
        if state["format"] >= 5:
            if state["index"] is not None:  # read as FAISS wrote it, in pieces
                state["index"] = faiss.read_index(faiss.PyCallbackIOReader(source.read, BYTES_PER_PIECE))  # type: ignore[attr-defined]
            return state
        for name in ("raw", "index"):  # formats 2-4: pickled pieces after the records
            if state[name] is not None:
                pieces, total = [], 0
                while total < state[name]:
                    pieces.append(pickle.load(source))
                    total += len(pieces[-1])
                state[name] = np.concatenate(pieces) if len(pieces) != 1 else pieces[0]
        if state["index"] is not None:
            state["index"] = faiss.deserialize_index(state["index"])
    return state


def _stored_ids(index: Any, ntotal: int, read_lock: Callable[[], AbstractContextManager[Any]]) -> np.ndarray:
    """The first `ntotal` internal ids of an IndexIDMap2, in the order it stores them."""
    with read_lock():
        return faiss.rev_swig_ptr(index.id_map.data(), ntotal).copy() if ntotal else np.empty(0, np.int64)


def _copy_rows(flat: Any, read_lock: Callable[[], AbstractContextManager[Any]], out: np.ndarray) -> None:
    """Copy the first len(out) vectors a flat index (or an HNSW index's storage) holds into
    `out`, a step at a time, each under the read lock."""
    ntotal, dimensions = out.shape
    for start in range(0, ntotal, ROWS_PER_STEP):
        stop = min(start + ROWS_PER_STEP, ntotal)
        with read_lock():  # re-read the address each step: an append may have moved the storage
            stored = faiss.rev_swig_ptr(flat.get_xb(), ntotal * dimensions).reshape(ntotal, dimensions)
            out[start:stop] = stored[start:stop]


def _flat_rows(
    index: Any, ntotal: int, wanted: np.ndarray, read_lock: Callable[[], AbstractContextManager[Any]]
) -> Callable[[int, int], np.ndarray]:
    """A reader of the stored vectors of the increasing internal ids `wanted` (from an
    IndexIDMap2 over a flat index): `rows(start, stop)` copies those of wanted[start:stop], a
    step of ROWS_PER_STEP at a time under the read lock, so a snapshot never holds a second
    copy of the whole index (an append may move the storage between steps; its first `ntotal`
    rows stay as they were)."""
    ids = _stored_ids(index, ntotal, read_lock)
    # Internal ids are added in increasing order and compaction keeps that order.
    positions, found = find_rows(ids, wanted)
    if not found.all():
        raise RuntimeError("a live vector is missing from the FAISS index: not writing a snapshot of it")
    flat: Any = faiss.downcast_index(index.index)

    def rows(start: int, stop: int) -> np.ndarray:
        picked = positions[start:stop]
        out = np.empty((len(picked), index.d), dtype=np.float32)
        for first in range(0, len(picked), ROWS_PER_STEP):
            with read_lock():  # re-read the address each step: an append may have moved the storage
                stored = faiss.rev_swig_ptr(flat.get_xb(), ntotal * index.d).reshape(ntotal, index.d)
                out[first : first + ROWS_PER_STEP] = stored[picked[first : first + ROWS_PER_STEP]]
        return out

    return rows


def _hnsw_index(snap: Capture, graph: Graph, read_lock: Callable[[], AbstractContextManager[Any]]) -> Any:
    """The captured HNSW index, as an IndexIDMap2 of its own: the captured graph over the first
    `ntotal` vectors and ids of the live one (which only ever appends them)."""
    live: Any = faiss.downcast_index(snap.index.index)
    inner: Any = faiss.IndexHNSWFlat(snap.index.d, live.hnsw.nb_neighbors(1), live.metric_type)
    wrapped = faiss.IndexIDMap2(inner)  # it must wrap an empty index
    storage: Any = faiss.downcast_index(inner.storage)
    # Sized once and filled in place: adding step by step would grow the storage by doubling,
    # holding the old and the new buffer (up to 1.5x the vectors) at each growth.
    storage.codes.resize(snap.ntotal * storage.code_size)
    storage.ntotal = snap.ntotal
    if snap.ntotal:
        copy = faiss.rev_swig_ptr(storage.get_xb(), snap.ntotal * snap.index.d).reshape(snap.ntotal, snap.index.d)
        _copy_rows(faiss.downcast_index(live.storage), read_lock, copy)
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
