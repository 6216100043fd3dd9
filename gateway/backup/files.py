"""The on-disk format of a backup: manifest, vector files, blob files, checksums.

manifest.json                         versions, what is inside, counts, sha256 of every file
metadata/<database>.sql               SQL dump from MetadataService.Export
vector/<index>/values.npy             float32 [count, dimensions], row i is vector i
vector/<index>/records.jsonl          row i: {"id", "namespace", "metadata"}
blob/<bucket>/objects.jsonl           {"key", "file", "size", "etag", "content_type", "metadata"}
blob/<bucket>/data/<n>                the bytes of object n
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

FORMAT = "strata-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_COPY_ROWS = 65536


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under root, so the rename that publishes it is durable."""
    files, directories = [], []
    for directory, _dirs, names in os.walk(root):
        files += [os.path.join(directory, name) for name in names]
        directories.append(directory)
    # fsync releases the GIL, and the file system commits concurrent flushes together.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="backup-fsync") as pool:
        list(pool.map(_fsync, files))
        list(pool.map(_fsync, directories))


def safe_component(name: str) -> str:
    """Layer names are validated by the services, but a backup never trusts them as paths."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ValueError(f"name {name!r} cannot be used as a file name")
    return name


class VectorWriter:
    """Streams vectors to a raw float32 file and JSONL as they are listed.

    close() ends the streaming; finish(keep) later writes values.npy with only the rows whose
    record `keep` accepts (the copy is taken before the catalog says which ones are needed).
    """

    def __init__(self, directory: Path, dimensions: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.dimensions = dimensions
        self.count = 0
        self._raw_path = directory / "values.f32"
        self._records_path = directory / "records.jsonl"
        self._raw: IO[bytes] = self._raw_path.open("wb")
        self._records: IO[str] = self._records_path.open("w", encoding="utf-8")

    def add(self, values: np.ndarray, records: list[dict[str, Any]]) -> None:
        if len(records) == 0:
            return
        block = np.ascontiguousarray(values, dtype="<f4").reshape(len(records), self.dimensions)
        self._raw.write(block.tobytes())
        for record in records:
            self._records.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
        self.count += len(records)

    def close(self) -> None:
        self._raw.close()
        self._records.close()

    def finish(self, keep: Callable[[dict[str, Any]], bool] | None = None) -> int:
        """Write values.npy (and rewrite records.jsonl) with the kept rows; return how many were left out."""
        self.close()
        rows = np.arange(self.count, dtype=np.int64)
        if keep is not None:
            kept: list[int] = []
            filtered = self._records_path.with_suffix(".kept")
            with self._records_path.open(encoding="utf-8") as source, filtered.open("w", encoding="utf-8") as out:
                for row, line in enumerate(source):
                    if keep(json.loads(line)):
                        kept.append(row)
                        out.write(line)
            os.replace(filtered, self._records_path)
            rows = np.asarray(kept, dtype=np.int64)
        left_out = self.count - len(rows)
        self.count = len(rows)
        if self.count == 0:  # nothing to map: an empty (0, dimensions) array
            np.save(self.directory / "values.npy", np.zeros((0, self.dimensions), dtype="<f4"))
        else:
            raw = np.memmap(self._raw_path, dtype="<f4", mode="r", shape=(left_out + self.count, self.dimensions))
            npy = np.lib.format.open_memmap(
                self.directory / "values.npy", mode="w+", dtype="<f4", shape=(self.count, self.dimensions)
            )
            for start in range(0, self.count, _COPY_ROWS):
                npy[start : start + _COPY_ROWS] = raw[rows[start : start + _COPY_ROWS]]
            npy.flush()
            del npy, raw
        self._raw_path.unlink()
        return left_out


def read_vectors(directory: Path, batch: int) -> Iterator[tuple[np.ndarray, list[dict[str, Any]]]]:
    """(values, records) in batches of at most `batch`, in file order."""
    path = directory / "values.npy"
    try:
        values = np.load(path, mmap_mode="r")
    except ValueError:  # an empty array has no data to map
        values = np.load(path)
    with (directory / "records.jsonl").open(encoding="utf-8") as handle:
        records: list[dict[str, Any]] = []
        start = 0
        for line in handle:
            records.append(json.loads(line))
            if len(records) == batch:
                yield np.asarray(values[start : start + batch]), records
                start += batch
                records = []
        if records:
            yield np.asarray(values[start : start + len(records)]), records
        if start + len(records) != len(values):
            raise ValueError(f"{directory}: records.jsonl and values.npy disagree on the number of vectors")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
