"""Restoring a backup onto a fresh stack: databases, then indexes and vectors, then buckets and objects.

A restore refuses to touch a stack that already holds any of the backup's databases,
indexes or buckets with data in them, unless forced; forced, it replaces them. Every file
is checked against the manifest's sha256 before anything is written, and the counts are
checked against the manifest afterwards.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import orjson

from gateway.backup import files
from gateway.backup.create import LIST_PAGE, Progress, _quiet
from gateway.backup.errors import BackupError, RestoreRefused
from gateway.backup.gateway_state import table_rows
from gateway.backup.layers import CALL_TIMEOUT, Layers, calling, is_code
from gateway.backup.metadata import create_database, delete_database, has_schema, import_database, list_databases
from strata.blob.v1 import blob_pb2
from strata.vector.v1 import vector_pb2

UPSERT_BATCH = 1000
UPSERT_BYTES = 3 * 1024 * 1024
PUT_CHUNK = 1 << 20
PUT_PARALLELISM = 8


def load_manifest(root: Path, *, check_files: bool = True) -> dict[str, Any]:
    path = root / files.MANIFEST
    if not path.is_file():
        raise BackupError(f"{root} is not a backup: {files.MANIFEST} is missing")
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != files.FORMAT:
        raise BackupError(f"{path} is not a {files.FORMAT} manifest")
    if manifest.get("format_version", 0) > files.FORMAT_VERSION:
        raise BackupError(
            f"{root} is format version {manifest['format_version']}; this Strata reads up to {files.FORMAT_VERSION}"
        )
    if check_files:
        for name, expected in manifest["files"].items():
            file = root / name
            if not file.is_file():
                raise BackupError(f"backup file {name} is missing from {root}")
            if file.stat().st_size != expected["bytes"] or files.sha256_file(file) != expected["sha256"]:
                raise BackupError(f"backup file {name} in {root} is damaged: its sha256 differs from the manifest")
    return manifest


# -- what is already there ------------------------------------------------------------------------


def _get_index(layers: Layers, name: str) -> vector_pb2.Index | None:
    try:
        reply = layers.vector.GetIndex(vector_pb2.GetIndexRequest(name=name), timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        if is_code(exc, grpc.StatusCode.NOT_FOUND):
            return None
        raise BackupError(f"GetIndex {name!r} failed on the vector service at {layers.addresses.vector}") from exc
    index: vector_pb2.Index = reply.index
    return index


def _bucket_keys(layers: Layers, bucket: str, limit: int | None = None) -> Iterator[blob_pb2.ObjectInfo]:
    """Objects of a bucket (nothing if it does not exist)."""
    token = ""
    seen = 0
    while True:
        try:
            page = layers.blob.ListObjects(
                blob_pb2.ListObjectsRequest(bucket=bucket, page_size=LIST_PAGE, page_token=token),
                timeout=CALL_TIMEOUT,
            )
        except grpc.RpcError as exc:
            if is_code(exc, grpc.StatusCode.NOT_FOUND):
                return
            raise BackupError(f"ListObjects {bucket!r} failed on the blob service at {layers.addresses.blob}") from exc
        for info in page.objects:
            yield info
            seen += 1
            if limit is not None and seen >= limit:
                return
        token = page.next_page_token
        if not token:
            return


def _shape(dimensions: int, metric: str, index_type: str) -> tuple[int, str, str]:
    return dimensions, metric, "INDEX_TYPE_FLAT" if index_type == "INDEX_TYPE_UNSPECIFIED" else index_type


def _conflicts(layers: Layers, manifest: dict[str, Any]) -> list[str]:
    conflicts: list[str] = []
    existing = set(list_databases(layers))
    for entry in manifest["databases"]:
        if entry["name"] in existing and has_schema(layers, entry["name"]):
            conflicts.append(f"metadata database {entry['name']!r} exists and has tables")
    for entry in manifest["indexes"]:
        index = _get_index(layers, entry["name"])
        if index is None:
            continue
        definition = entry["definition"]
        if index.vector_count:
            conflicts.append(f"vector index {entry['name']!r} exists with {index.vector_count} vectors")
        elif _shape(
            index.dimensions, vector_pb2.Metric.Name(index.metric), vector_pb2.IndexType.Name(index.index_type)
        ) != _shape(definition["dimensions"], definition["metric"], definition["index_type"]):
            conflicts.append(f"vector index {entry['name']!r} exists with a different shape")
    for entry in manifest["buckets"]:
        if any(True for _ in _bucket_keys(layers, entry["name"], limit=1)):
            conflicts.append(f"blob bucket {entry['name']!r} exists and holds objects")
    return conflicts


def _clear(layers: Layers, manifest: dict[str, Any], progress: Progress) -> None:
    existing = set(list_databases(layers))
    for entry in manifest["databases"]:
        if entry["name"] in existing:
            delete_database(layers, entry["name"])
            progress(f"force: deleted database {entry['name']}")
    for entry in manifest["indexes"]:
        if _get_index(layers, entry["name"]) is not None:
            with calling("vector", layers.addresses.vector, f"DeleteIndex {entry['name']!r}"):
                layers.vector.DeleteIndex(vector_pb2.DeleteIndexRequest(name=entry["name"]), timeout=CALL_TIMEOUT)
            progress(f"force: deleted index {entry['name']}")
    for entry in manifest["buckets"]:
        keys = [info.key for info in _bucket_keys(layers, entry["name"])]
        with calling("blob", layers.addresses.blob, f"DeleteObject in {entry['name']!r}"):
            for key in keys:
                layers.blob.DeleteObject(
                    blob_pb2.DeleteObjectRequest(bucket=entry["name"], key=key), timeout=CALL_TIMEOUT
                )
        if keys:
            progress(f"force: emptied bucket {entry['name']} ({len(keys)} objects)")


# -- writing ----------------------------------------------------------------------------------


def _restore_database(layers: Layers, root: Path, entry: dict[str, Any]) -> None:
    name = entry["name"]
    try:
        create_database(layers, name)
    except BackupError as exc:
        if not (isinstance(exc.__cause__, grpc.RpcError) and is_code(exc.__cause__, grpc.StatusCode.ALREADY_EXISTS)):
            raise
    reply = import_database(layers, name, root / entry["file"])
    if reply.rows_written != entry["rows_written"]:
        raise BackupError(
            f"database {name!r}: import wrote {reply.rows_written} rows, the backup recorded {entry['rows_written']}"
        )


def _columns(values: np.ndarray, records: list[dict[str, Any]]) -> Iterator[vector_pb2.VectorColumns]:
    """The batch in the columnar write form (values as one float32 buffer, metadata as JSON text):
    one message per namespace, split further so no request passes gRPC's usual 4 MiB limit.
    The service takes it without a message and a Struct per vector (~3x the rate of `Vector`s)."""
    rows_of: dict[str, list[int]] = {}
    for row, record in enumerate(records):
        rows_of.setdefault(record["namespace"], []).append(row)
    row_bytes = 4 * values.shape[1] + 16  # the values, and the fields' tags and lengths
    for namespace, rows in rows_of.items():
        batch: list[tuple[int, str]] = []
        size = 0
        for row in rows:
            metadata = records[row]["metadata"]
            text = orjson.dumps(metadata).decode() if metadata else ""
            cost = row_bytes + len(records[row]["id"]) + len(text)
            if batch and size + cost > UPSERT_BYTES:
                yield _columns_of(values, records, batch, namespace)
                batch, size = [], 0
            batch.append((row, text))
            size += cost
        if batch:
            yield _columns_of(values, records, batch, namespace)


def _columns_of(
    values: np.ndarray, records: list[dict[str, Any]], batch: list[tuple[int, str]], namespace: str
) -> vector_pb2.VectorColumns:
    rows = [row for row, _ in batch]
    return vector_pb2.VectorColumns(
        ids=[records[row]["id"] for row in rows],
        values=np.ascontiguousarray(values[rows], dtype="<f4").tobytes(),
        metadata_json=[text for _, text in batch],
        namespace=namespace,
    )


def _restore_index(layers: Layers, root: Path, entry: dict[str, Any]) -> None:
    name = entry["name"]
    definition = entry["definition"]
    hnsw = vector_pb2.HnswConfig(**definition.get("hnsw", {}))
    if _get_index(layers, name) is None:
        with calling("vector", layers.addresses.vector, f"CreateIndex {name!r}"):
            layers.vector.CreateIndex(
                vector_pb2.CreateIndexRequest(
                    name=name,
                    dimensions=definition["dimensions"],
                    metric=vector_pb2.Metric.Value(definition["metric"]),
                    index_type=vector_pb2.IndexType.Value(definition["index_type"]),
                    hnsw=hnsw if definition["index_type"] == "INDEX_TYPE_HNSW" else None,
                    description=definition["description"],
                ),
                timeout=CALL_TIMEOUT,
            )
    directory = (root / entry["values_file"]).parent
    with calling("vector", layers.addresses.vector, f"UpsertVectors into {name!r}"):
        for values, records in files.read_vectors(directory, UPSERT_BATCH):
            for columns in _columns(values, records):
                layers.vector.UpsertVectors(
                    vector_pb2.UpsertVectorsRequest(index_name=name, columns=columns), timeout=CALL_TIMEOUT
                )
    index = _get_index(layers, name)
    count = index.vector_count if index else 0
    if count != entry["vector_count"]:
        raise BackupError(f"index {name!r}: {count} vectors after restore, the backup holds {entry['vector_count']}")


def _put_object(layers: Layers, bucket: str, entry: dict[str, Any], path: Path) -> None:
    def messages() -> Iterator[blob_pb2.PutObjectRequest]:
        yield blob_pb2.PutObjectRequest(
            header=blob_pb2.PutObjectHeader(
                bucket=bucket, key=entry["key"], content_type=entry["content_type"], metadata=entry["metadata"]
            )
        )
        with path.open("rb") as handle:
            while block := handle.read(PUT_CHUNK):
                yield blob_pb2.PutObjectRequest(chunk=block)

    layers.blob.PutObject(messages(), timeout=CALL_TIMEOUT)


def _restore_bucket(layers: Layers, root: Path, entry: dict[str, Any]) -> None:
    name = entry["name"]
    try:
        layers.blob.CreateBucket(blob_pb2.CreateBucketRequest(name=name), timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        if not is_code(exc, grpc.StatusCode.ALREADY_EXISTS):
            raise BackupError(f"CreateBucket {name!r} failed on the blob service at {layers.addresses.blob}") from exc
    directory = (root / entry["objects_file"]).parent
    with (
        calling("blob", layers.addresses.blob, f"PutObject into {name!r}"),
        ThreadPoolExecutor(max_workers=PUT_PARALLELISM, thread_name_prefix="restore-blob") as pool,
    ):
        # Bounded in flight: a listing of millions of objects is not read into memory at once.
        pending: set[Future[None]] = set()
        for obj in files.read_jsonl(root / entry["objects_file"]):
            if len(pending) >= PUT_PARALLELISM * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
            pending.add(pool.submit(_put_object, layers, name, obj, directory / obj["file"]))
        for future in pending:
            future.result()
    count = size = 0
    for info in _bucket_keys(layers, name):
        count += 1
        size += info.size
    if (count, size) != (entry["object_count"], entry["bytes"]):
        raise BackupError(
            f"bucket {name!r}: {count} objects ({size} bytes) after restore, the backup holds"
            f" {entry['object_count']} ({entry['bytes']} bytes)"
        )


def _check_catalog(layers: Layers, manifest: dict[str, Any]) -> None:
    gateway = manifest.get("gateway")
    if not gateway or not gateway.get("table_rows"):
        return
    restored = table_rows(layers, gateway["database"])
    if restored != gateway["table_rows"]:
        raise BackupError(
            f"database {gateway['database']!r}: rows per table after restore {restored}, the backup holds"
            f" {gateway['table_rows']}"
        )


def restore_backup(
    directory: str | os.PathLike[str],
    layers: Layers | None = None,
    *,
    force: bool = False,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """Restore the backup in `directory` onto the stack; return its manifest.

    Refuses (RestoreRefused) when the target already holds data in any database, index or
    bucket of the backup, unless `force`, which deletes them first.
    """
    root = Path(directory).resolve()
    manifest = load_manifest(root)
    own_layers = layers is None
    active = layers or Layers.connect()
    try:
        conflicts = _conflicts(active, manifest)
        if conflicts:
            if not force:
                raise RestoreRefused(conflicts)
            _clear(active, manifest, progress)
        for entry in manifest["databases"]:
            _restore_database(active, root, entry)
            progress(f"metadata: database {entry['name']} ({entry['rows_written']} rows)")
        _check_catalog(active, manifest)
        for entry in manifest["indexes"]:
            _restore_index(active, root, entry)
            progress(f"vectors: index {entry['name']} ({entry['vector_count']} vectors)")
        for entry in manifest["buckets"]:
            _restore_bucket(active, root, entry)
            progress(f"blobs: bucket {entry['name']} ({entry['object_count']} objects)")
        progress(f"restore of {root} complete")
        return manifest
    finally:
        if own_layers:
            active.close()
