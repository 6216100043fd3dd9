"""Taking a backup: metadata first (the source of truth), then vectors and blobs, then a consistency check.

Writes may continue while a backup runs. The catalog in the metadata dump says which
(document, generation) pairs are READY; each was fully written to the vector and blob
layers before its row committed. Vectors and objects are copied after the dump, so they
hold everything the dump needs unless a concurrent replace or delete removed some of it
in between; then the whole backup is taken again (a bounded number of times).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from gateway.backup import files
from gateway.backup.errors import BackupError
from gateway.backup.gateway_state import GatewayState, mentions_catalog, missing_items, read_state
from gateway.backup.layers import CALL_TIMEOUT, Layers, calling, is_code
from gateway.backup.metadata import export_database, list_databases, scratch_copy, sweep_scratch
from strata.blob.v1 import blob_pb2
from strata.vector.v1 import vector_pb2

DEFAULT_ATTEMPTS = 5
LIST_PAGE = 1000
BLOB_PARALLELISM = 8
CONTRACTS = {"vector": "strata.vector.v1", "metadata": "strata.metadata.v1", "blob": "strata.blob.v1"}

Progress = Callable[[str], None]
# Called after each phase ("metadata", "vectors", "blobs") with the attempt number; tests use it to race writes.
PhaseHook = Callable[[str, int], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class _Attempt:
    """One try at a backup, in order: dump metadata, copy vectors, copy blobs, then read the dump and check.

    The copies are taken as soon after the dump as possible (the window in which a concurrent
    replace can make the attempt inconsistent); reading the catalog out of the dump, and leaving
    out what it does not reference, come after.
    """

    root: Path
    layers: Layers
    gateway_database: str
    gateway_bucket: str
    progress: Progress
    state: GatewayState | None = None
    databases: list[dict[str, Any]] = field(default_factory=list)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    buckets: list[dict[str, Any]] = field(default_factory=list)
    _writers: dict[str, files.VectorWriter] = field(default_factory=dict)

    # -- metadata ----------------------------------------------------------------------------

    def dump_metadata(self) -> None:
        directory = self.root / "metadata"
        directory.mkdir()
        for name in list_databases(self.layers):
            file = directory / f"{files.safe_component(name)}.sql"
            try:
                export_database(self.layers, name, file)
            except BackupError as exc:
                if isinstance(exc.__cause__, grpc.RpcError) and is_code(exc.__cause__, grpc.StatusCode.NOT_FOUND):
                    file.unlink(missing_ok=True)
                    continue  # deleted since it was listed
                raise
            self.databases.append({"name": name, "file": file.relative_to(self.root).as_posix()})
            self.progress(f"metadata: database {name} ({file.stat().st_size} bytes of SQL)")

    def read_dumps(self) -> None:
        """Import each dump into a scratch database: proves it restores, counts its rows, and reads the catalog."""
        for entry in self.databases:
            file = self.root / entry["file"]
            with scratch_copy(self.layers, file) as (scratch, imported):
                if entry["name"] == self.gateway_database and mentions_catalog(file):
                    self.state = read_state(self.layers, scratch, entry["name"], self.gateway_bucket)
            entry["statements"] = imported.statements_executed
            entry["rows_written"] = imported.rows_written

    # -- vectors -----------------------------------------------------------------------------

    def _list_indexes(self) -> list[str]:
        names: list[str] = []
        token = ""
        with calling("vector", self.layers.addresses.vector, "ListIndexes"):
            while True:
                page = self.layers.vector.ListIndexes(
                    vector_pb2.ListIndexesRequest(page_size=LIST_PAGE, page_token=token), timeout=CALL_TIMEOUT
                )
                names += [i.name for i in page.indexes]
                token = page.next_page_token
                if not token:
                    return names

    def copy_vectors(self) -> None:
        (self.root / "vector").mkdir()
        for name in self._list_indexes():
            try:
                entry = self._copy_index(name)
            except grpc.RpcError as exc:
                writer = self._writers.pop(name, None)
                if writer is not None:
                    writer.close()
                if is_code(exc, grpc.StatusCode.NOT_FOUND):
                    shutil.rmtree(self.root / "vector" / files.safe_component(name), ignore_errors=True)
                    continue  # deleted while being copied
                raise BackupError(
                    f"copying index {name!r} failed on the vector service at {self.layers.addresses.vector}: {exc}"
                ) from exc
            self.indexes.append(entry)
            self.progress(f"vectors: index {name} ({entry['vector_count']} vectors)")

    def _copy_index(self, name: str) -> dict[str, Any]:
        index = self.layers.vector.GetIndex(vector_pb2.GetIndexRequest(name=name), timeout=CALL_TIMEOUT).index
        directory = self.root / "vector" / files.safe_component(name)
        writer = self._writers[name] = files.VectorWriter(directory, index.dimensions)
        token = ""
        while True:
            page = self.layers.vector.ListVectors(
                vector_pb2.ListVectorsRequest(
                    index_name=name, page_size=LIST_PAGE, page_token=token, return_values=True, return_metadata=True
                ),
                timeout=CALL_TIMEOUT,
            )
            records = [
                {
                    "id": vector.id,
                    "namespace": vector.namespace,
                    "metadata": json_format.MessageToDict(vector.metadata) if vector.HasField("metadata") else {},
                }
                for vector in page.vectors
            ]
            values = np.asarray([list(v.values) for v in page.vectors], dtype=np.float32)
            writer.add(values.reshape(len(records), index.dimensions), records)
            token = page.next_page_token
            if not token:
                break
        writer.close()
        return {
            "name": name,
            "definition": {
                "dimensions": index.dimensions,
                "metric": vector_pb2.Metric.Name(index.metric),
                "index_type": vector_pb2.IndexType.Name(index.index_type),
                "hnsw": json_format.MessageToDict(index.hnsw, preserving_proto_field_name=True),
                "description": index.description,
            },
            "vector_count": writer.count,
            "values_file": (directory / "values.npy").relative_to(self.root).as_posix(),
            "records_file": (directory / "records.jsonl").relative_to(self.root).as_posix(),
        }

    def finish_vectors(self) -> dict[str, set[str]]:
        """Write each index's .npy, leaving out gateway chunk vectors of generations the dump does not reference.

        Returns the default-namespace ids kept in the gateway's indexes."""
        gateway_indexes = self.state.index_names if self.state else {}
        kept_ids: dict[str, set[str]] = {}
        for entry in self.indexes:
            name = entry["name"]
            collection = gateway_indexes.get(name)
            writer = self._writers.pop(name)
            if collection is None or self.state is None:
                entry["left_out_unreferenced"] = writer.finish()
            else:
                ids = kept_ids[name] = set()
                keep = _vector_filter(self.state, collection, ids)
                entry["left_out_unreferenced"] = writer.finish(keep)
            entry["vector_count"] = writer.count
            entry["namespaces"] = dict(
                sorted(Counter(r["namespace"] for r in files.read_jsonl(self.root / entry["records_file"])).items())
            )
        return kept_ids

    # -- blobs -------------------------------------------------------------------------------

    def _list_buckets(self) -> list[str]:
        names: list[str] = []
        token = ""
        with calling("blob", self.layers.addresses.blob, "ListBuckets"):
            while True:
                page = self.layers.blob.ListBuckets(
                    blob_pb2.ListBucketsRequest(page_size=LIST_PAGE, page_token=token), timeout=CALL_TIMEOUT
                )
                names += [b.name for b in page.buckets]
                token = page.next_page_token
                if not token:
                    return names

    def copy_blobs(self) -> None:
        (self.root / "blob").mkdir()
        with ThreadPoolExecutor(max_workers=BLOB_PARALLELISM, thread_name_prefix="backup-blob") as pool:
            for name in self._list_buckets():
                try:
                    entry = self._copy_bucket(name, pool)
                except grpc.RpcError as exc:
                    if is_code(exc, grpc.StatusCode.NOT_FOUND):
                        shutil.rmtree(self.root / "blob" / files.safe_component(name), ignore_errors=True)
                        continue  # bucket deleted while being copied
                    raise BackupError(
                        f"copying bucket {name!r} failed on the blob service at {self.layers.addresses.blob}: {exc}"
                    ) from exc
                self.buckets.append(entry)
                self.progress(f"blobs: bucket {name} ({entry['object_count']} objects, {entry['bytes']} bytes)")

    def _copy_bucket(self, bucket: str, pool: ThreadPoolExecutor) -> dict[str, Any]:
        directory = self.root / "blob" / files.safe_component(bucket)
        (directory / "data").mkdir(parents=True)
        count = total = 0
        token = ""
        with (directory / "objects.jsonl").open("w", encoding="utf-8") as listing:
            while True:
                page = self.layers.blob.ListObjects(
                    blob_pb2.ListObjectsRequest(bucket=bucket, page_size=LIST_PAGE, page_token=token),
                    timeout=CALL_TIMEOUT,
                )
                numbered = [(count + n, info.key) for n, info in enumerate(page.objects)]
                count += len(numbered)
                copies = pool.map(
                    lambda item: self._copy_object(bucket, item[1], directory / "data" / str(item[0])), numbered
                )
                for (number, _key), entry in zip(numbered, copies, strict=True):
                    if entry is None:
                        continue  # deleted since it was listed
                    entry["file"] = f"data/{number}"
                    listing.write(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n")
                    total += entry["size"]
                token = page.next_page_token
                if not token:
                    break
        return {
            "name": bucket,
            "object_count": sum(1 for _ in files.read_jsonl(directory / "objects.jsonl")),
            "bytes": total,
            "objects_file": (directory / "objects.jsonl").relative_to(self.root).as_posix(),
        }

    def _copy_object(self, bucket: str, key: str, path: Path) -> dict[str, Any] | None:
        stream = self.layers.blob.GetObject(blob_pb2.GetObjectRequest(bucket=bucket, key=key), timeout=CALL_TIMEOUT)
        info: blob_pb2.ObjectInfo | None = None
        size = 0
        try:
            with path.open("wb") as out:
                for message in stream:
                    if message.WhichOneof("part") == "header":
                        info = message.header.object
                    else:
                        out.write(message.chunk)
                        size += len(message.chunk)
        except grpc.RpcError as exc:
            if is_code(exc, grpc.StatusCode.NOT_FOUND) and info is None:
                path.unlink(missing_ok=True)
                return None
            raise
        if info is None or size != info.size:
            raise BackupError(f"object {key!r} in bucket {bucket!r}: read {size} bytes, expected the header's size")
        return {
            "key": key,
            "size": size,
            "etag": info.etag,
            "content_type": info.content_type,
            "metadata": dict(info.metadata),
        }

    def finish_blobs(self) -> dict[str, set[str]]:
        """Leave out objects of generations the dump does not reference; return the keys kept per bucket."""
        kept: dict[str, set[str]] = {}
        for entry in self.buckets:
            listing = self.root / entry["objects_file"]
            keys = kept[entry["name"]] = set()
            left_out = total = 0
            with listing.with_suffix(".kept").open("w", encoding="utf-8") as out:
                for obj in files.read_jsonl(listing):
                    if self.state is not None and not self.state.keeps_object(entry["name"], obj["key"]):
                        (listing.parent / obj["file"]).unlink()
                        left_out += 1
                        continue
                    out.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")
                    keys.add(obj["key"])
                    total += obj["size"]
            os.replace(listing.with_suffix(".kept"), listing)
            entry.update(object_count=len(keys), bytes=total, left_out_unreferenced=left_out)
        return kept

    # -- check -------------------------------------------------------------------------------

    def finish(self) -> list[str]:
        """Read the dumps, trim the copies to what they reference, and list what READY documents lack."""
        self.read_dumps()
        vector_ids = self.finish_vectors()
        object_keys = self.finish_blobs()
        if self.state is None:
            return []
        return missing_items(self.state, vector_ids, object_keys)


def _vector_filter(state: GatewayState, collection: str, ids: set[str]) -> Callable[[dict[str, Any]], bool]:
    """Keeps the vectors `state` references in `collection`, noting the default-namespace ids kept."""

    def keep(record: dict[str, Any]) -> bool:
        if not state.keeps_vector(collection, record["metadata"]):
            return False
        if not record["namespace"]:
            ids.add(record["id"])
        return True

    return keep


def _versions() -> dict[str, Any]:
    try:
        strata_version = importlib.metadata.version("strata")
    except importlib.metadata.PackageNotFoundError:
        strata_version = "unknown"
    return {
        "format": files.FORMAT,
        "format_version": files.FORMAT_VERSION,
        "strata": strata_version,
        "contracts": CONTRACTS,
        "python": platform.python_version(),
    }


def _file_table(root: Path) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        table[path.relative_to(root).as_posix()] = {"bytes": path.stat().st_size, "sha256": files.sha256_file(path)}
    return table


def _prepare_target(directory: Path) -> Path:
    target = directory.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target} already exists and is not an empty directory; choose a new backup directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def create_backup(
    directory: str | os.PathLike[str],
    layers: Layers | None = None,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    gateway_database: str | None = None,
    gateway_bucket: str | None = None,
    progress: Progress = _quiet,
    after_phase: PhaseHook | None = None,
) -> dict[str, Any]:
    """Back up every database, index and bucket of the stack into `directory`; return the manifest.

    The backup is written to a temporary sibling directory and renamed into place only once it
    is complete and consistent, so a crash never leaves a half backup under `directory`.
    """
    target = _prepare_target(Path(directory))
    own_layers = layers is None
    active = layers or Layers.connect()
    database = gateway_database or os.environ.get("STRATA_GATEWAY_DATABASE") or "strata_gateway"
    bucket = gateway_bucket or os.environ.get("STRATA_GATEWAY_BUCKET") or "strata-documents"
    started = time.monotonic()
    try:
        for name in sweep_scratch(active):
            progress(f"dropped scratch database {name} left by an earlier, interrupted backup")
        missing: list[str] = []
        for attempt in range(1, max(1, attempts) + 1):
            temp = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:12]}"
            temp.mkdir()
            try:
                run = _Attempt(temp, active, database, bucket, progress)
                run.dump_metadata()
                if after_phase:
                    after_phase("metadata", attempt)
                run.copy_vectors()
                if after_phase:
                    after_phase("vectors", attempt)
                run.copy_blobs()
                if after_phase:
                    after_phase("blobs", attempt)
                missing = run.finish()
                if missing:
                    progress(f"attempt {attempt}: writes removed what READY documents need ({missing[0]}...); retrying")
                    shutil.rmtree(temp)
                    time.sleep(min(2.0, 0.1 * 2**attempt))
                    continue
                manifest = _manifest(run, attempt, started)
                (temp / files.MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                files.fsync_tree(temp)
                if target.exists():
                    target.rmdir()  # empty, checked above
                os.rename(temp, target)
                _fsync_dir(target.parent)
                progress(f"backup complete in {target} (attempt {attempt})")
                return manifest
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
        shown = "\n  ".join(missing[:10])
        raise BackupError(
            f"no consistent backup after {attempts} attempts: writes kept replacing or deleting documents between"
            f" the metadata dump and the vector/blob copies. Retry when writes are quieter. Last attempt lacked"
            f" ({len(missing)}):\n  {shown}"
        )
    finally:
        if own_layers:
            active.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _manifest(run: _Attempt, attempt: int, started: float) -> dict[str, Any]:
    table = _file_table(run.root)
    return {
        **_versions(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "duration_seconds": round(time.monotonic() - started, 3),
        "attempts": attempt,
        "sources": {
            "vector": run.layers.addresses.vector,
            "metadata": run.layers.addresses.metadata,
            "blob": run.layers.addresses.blob,
        },
        "databases": run.databases,
        "indexes": run.indexes,
        "buckets": run.buckets,
        "gateway": run.state.summary() if run.state else None,
        "counts": {
            "databases": len(run.databases),
            "indexes": len(run.indexes),
            "vectors": sum(i["vector_count"] for i in run.indexes),
            "buckets": len(run.buckets),
            "objects": sum(b["object_count"] for b in run.buckets),
            "object_bytes": sum(b["bytes"] for b in run.buckets),
        },
        "files": table,
        "files_sha256": hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest(),
    }
