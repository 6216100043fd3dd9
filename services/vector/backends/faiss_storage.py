"""On-disk state of one FAISS index: spec, write-ahead log files and the snapshot.

Layout under data_dir/vector/indexes/<name>/:

    spec.json                        the immutable IndexSpec
    snapshot.bin                     the state after mutation N (written atomically)
    wal-<first mutation id>.log      mutations, appended and fsynced before each reply

A log frame is `<u32 payload length><u32 crc32 of payload><payload>`; the payload is
`<u32 header length><JSON header><float32 values>`. A crash can only tear the tail of the
newest log file: replay stops there and cuts it off. Older files are deleted once a
snapshot covers them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np
import orjson
from zlib_ng.zlib_ng import crc32, crc32_combine  # zlib's CRC-32, computed with SIMD

from services.vector.model import (
    HnswParams,
    IndexSpec,
    IndexType,
    Metadata,
    Metric,
    Vector32,
    VectorKey,
    keys_in,
    make_key,
)

log = logging.getLogger("strata.vector.storage")

SPEC_FILE = "spec.json"
SNAPSHOT_FILE = "snapshot.bin"
_FRAME = struct.Struct("<II")
_HEADER_LEN = struct.Struct("<I")
_IOV_MAX = 1024  # buffers per writev (POSIX guarantees at least 16; Linux allows 1024)
FLUSH_EVERY_BYTES = 8 * 1024 * 1024


def sync_data(fd: int) -> None:
    """fdatasync where there is one; macOS has none (Python leaves it out of `os` there), and
    fsync does the same and a little more."""
    getattr(os, "fdatasync", os.fsync)(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Sink(Protocol):
    def write(self, data: bytes | memoryview, /) -> int: ...


class _Flushing:
    """A file that forces what was written to disk every FLUSH_EVERY_BYTES.

    Without it a snapshot's dirty pages pile up until its final fsync, and ext4 commits them
    with whatever the log fsyncs meanwhile: measured here, a log fsync during a 168 MB write
    then waited up to 36-58 ms, against 9-24 ms when the big file is flushed every 8 MiB."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pending = 0

    def write(self, data: bytes | memoryview, /) -> int:
        written = self._out.write(data)
        self._pending += written
        if self._pending >= FLUSH_EVERY_BYTES:
            self._out.flush()
            sync_data(self._out.fileno())
            self._pending = 0
        return written


def write_atomically(path: Path, data: bytes | Callable[[Sink], None]) -> None:
    """Write a file (its bytes, or a function writing to it, flushed to disk as it goes) so that
    a crash leaves either the old or the new content, never a mix."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        if isinstance(data, bytes):
            out.write(data)
        else:
            data(_Flushing(out))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def spec_to_json(spec: IndexSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "dimensions": spec.dimensions,
        "metric": spec.metric.value,
        "index_type": spec.index_type.value,
        "hnsw": None if spec.hnsw is None else vars(spec.hnsw),
        "description": spec.description,
        "create_time": spec.create_time,
    }


def spec_from_json(data: dict[str, Any]) -> IndexSpec:
    hnsw = data.get("hnsw")
    return IndexSpec(
        name=data["name"],
        dimensions=int(data["dimensions"]),
        metric=Metric(data["metric"]),
        index_type=IndexType(data["index_type"]),
        hnsw=None if hnsw is None else HnswParams(**hnsw),
        description=data.get("description", ""),
        create_time=float(data.get("create_time", 0.0)),
    )


def read_spec(directory: Path) -> IndexSpec:
    return spec_from_json(json.loads((directory / SPEC_FILE).read_text()))


@dataclass(frozen=True)
class Framed:
    """An entry's log frame but for its mutation id, built before the write queues for the group
    commit: the header after its "m" field, the values as bytes, and the CRC of each. The group
    commit then only numbers the entry (`LogEntry.frame`), where building the frame there held
    every write of the next group waiting (0.7-1.1 ms per 1,000-vector batch in the service: a
    CRC over more than 5 KB lets go of the GIL, and the log writer waited to get it back)."""

    tail: bytes
    tail_crc: int
    body: memoryview | None
    body_crc: int


def frame_ahead(op: str, keys: list[VectorKey], values: Vector32 | None, metadata_json: list[str] | None) -> Framed:
    namespaces, ids = zip(*keys, strict=True) if keys else ((), ())
    distinct = set(namespaces)
    header: dict[str, Any] = {
        "op": op,
        "ns": distinct.pop() if len(distinct) == 1 else namespaces,  # one for all, or one per id
        "ids": ids,
    }
    tail = orjson.dumps(header)[1:]  # `"op":...}`: the entry's number goes before it
    if metadata_json is not None:  # the JSON texts the core checked, spliced in as they are
        tail = tail[:-1] + b',"md":[' + ",".join(metadata_json).encode() + b"]}"
    if values is None:
        return Framed(tail, crc32(tail), None, 0)
    body = memoryview(np.ascontiguousarray(values, dtype="<f4").reshape(-1).view(np.uint8))  # type: ignore[arg-type]
    return Framed(tail, crc32(tail), body, crc32(body))


@dataclass
class LogEntry:
    """One applied mutation, already resolved (an insert logs only what it inserted)."""

    mutation_id: int
    op: str  # "upsert" or "delete"
    keys: list[VectorKey]
    values: Vector32 | None = None
    metadata: list[Metadata] | None = None
    # The same metadata as the core's JSON texts: what an upsert logs (replay fills `metadata`).
    metadata_json: list[str] | None = None
    # Where the log holds an upsert's values, once written or replayed: (rows, file, offset) for
    # each stretch of them (one, or one per entry when replayed entries are merged).
    values_at: list[tuple[int, Path, int]] | None = None
    # The frame built ahead from these keys, values and texts (`frame_ahead`), if it was.
    framed: Framed | None = None

    def frame(self) -> list[bytes | memoryview]:
        """The entry's log frame as buffers to write in order (the values are not copied)."""
        framed = self.framed or frame_ahead(self.op, self.keys, self.values, self.metadata_json)
        opening = b'{"m":%d,' % self.mutation_id
        start = _HEADER_LEN.pack(len(opening) + len(framed.tail)) + opening
        # The parts' CRCs, combined: a CRC over more than 5 KB lets go of the GIL.
        crc = crc32_combine(crc32(start), framed.tail_crc, len(framed.tail))
        size = len(start) + len(framed.tail)
        if framed.body is None:
            return [_FRAME.pack(size, crc), start, framed.tail]
        crc = crc32_combine(crc, framed.body_crc, len(framed.body))
        return [_FRAME.pack(size + len(framed.body), crc), start, framed.tail, framed.body]

    @classmethod
    def decode(cls, payload: bytes, dimensions: int) -> LogEntry:
        (head_len,) = _HEADER_LEN.unpack_from(payload)
        header = _load_header(memoryview(payload)[4 : 4 + head_len])
        if "k" in header:  # written before namespaces and ids were logged apart
            keys = list(map(make_key, header["k"]))
        elif isinstance(header["ns"], str):
            keys = keys_in(header["ns"], header["ids"])
        else:
            keys = list(map(make_key, zip(header["ns"], header["ids"], strict=True)))
        values = None
        if header["op"] == "upsert":
            values = np.frombuffer(payload, dtype="<f4", offset=4 + head_len).reshape(len(keys), dimensions)
        return cls(header["m"], header["op"], keys, values, header.get("md"))


def _load_header(text: memoryview) -> dict[str, Any]:
    try:
        return orjson.loads(text)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        # Written before metadata was checked to be strict JSON: it may hold NaN or Infinity.
        return json.loads(bytes(text))  # type: ignore[no-any-return]


def _log_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("wal-*.log"))


def replay_log(directory: Path, dimensions: int) -> Iterator[LogEntry]:
    """Every intact entry in order; cuts a torn tail off the newest file."""
    files = _log_files(directory)
    for position, path in enumerate(files):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            torn = offset + _FRAME.size > len(data)
            if not torn:
                length, crc = _FRAME.unpack_from(data, offset)
                payload = data[offset + _FRAME.size : offset + _FRAME.size + length]
                torn = len(payload) != length or crc32(payload) != crc
            if torn:
                if position != len(files) - 1:
                    raise RuntimeError(f"{path} is corrupt at byte {offset}, before newer log files")
                log.warning("cutting a torn log tail", extra={"file": str(path), "offset": offset})
                with open(path, "r+b") as out:
                    out.truncate(offset)
                    os.fsync(out.fileno())
                return
            entry = LogEntry.decode(payload, dimensions)
            if entry.values is not None:
                values_offset = offset + _FRAME.size + length - entry.values.nbytes
                entry.values_at = [(len(entry.keys), path, values_offset)]
            yield entry
            offset += _FRAME.size + length


class LogWriter:
    """Appends fsynced frames to the newest log file; `rotate` starts a new one for a snapshot."""

    def __init__(self, directory: Path, first_mutation_id: int) -> None:
        self.directory = directory
        self.bytes = 0
        self.entries = 0
        self.first_entry_time: float | None = None
        self._fd = -1
        self.rotate(first_mutation_id)

    def rotate(self, first_mutation_id: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        path = self.directory / f"wal-{first_mutation_id:020d}.log"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fsync_dir(self.directory)
        self.current = path
        self._size = os.fstat(self._fd).st_size

    def append(self, entries: list[LogEntry], now: float) -> None:
        """Write the entries and fsync once; they are durable when this returns. Each upsert
        learns where its values are (`LogEntry.values_at`)."""
        buffers: list[bytes | memoryview] = []
        position = self._size
        for entry in entries:
            frame = entry.frame()
            buffers += frame
            position += sum(len(buffer) for buffer in frame)
            if entry.values is not None:
                entry.values_at = [(len(entry.keys), self.current, position - len(frame[-1]))]
        size = position - self._size
        while buffers:
            chunk, buffers = buffers[:_IOV_MAX], buffers[_IOV_MAX:]
            written = os.writev(self._fd, chunk)
            if written < sum(len(buffer) for buffer in chunk):  # a short write: finish the chunk plainly
                rest = memoryview(b"".join(chunk))[written:]
                while rest:
                    rest = rest[os.write(self._fd, rest) :]
        sync_data(self._fd)
        self._size += size
        self.bytes += size
        self.entries += len(entries)
        if self.first_entry_time is None:
            self.first_entry_time = now

    def forget_before_current(self) -> None:
        """Delete log files older than the current one (a snapshot covers them)."""
        for path in _log_files(self.directory):
            if path < self.current:
                path.unlink()
        fsync_dir(self.directory)

    def reset_counters(self) -> None:
        self.bytes = 0
        self.entries = 0
        self.first_entry_time = None

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
