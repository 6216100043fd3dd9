"""Backups are not only for the gateway's data: any database, index (namespaces, HNSW) and bucket round-trips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import json_format, struct_pb2

from gateway.backup import create_backup, restore_backup
from gateway.backup.layers import Layers
from strata.blob.v1 import blob_pb2
from strata.metadata.v1 import metadata_pb2
from strata.vector.v1 import vector_pb2
from tests.backup.helpers import bare_layers, layers_of

ROWS, VECTORS, OBJECTS = 3000, 2500, 1100


def value(v: Any) -> metadata_pb2.Value:
    if v is None:
        return metadata_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(v, bytes):
        return metadata_pb2.Value(bytes_value=v)
    if isinstance(v, int):
        return metadata_pb2.Value(int_value=v)
    if isinstance(v, float):
        return metadata_pb2.Value(double_value=v)
    return metadata_pb2.Value(text_value=v)


def fill(layers: Layers) -> None:
    layers.metadata.CreateDatabase(metadata_pb2.CreateDatabaseRequest(name="app"))
    statements = [
        metadata_pb2.Statement(sql="CREATE TABLE items (id INTEGER PRIMARY KEY, big BIGINT, x REAL, t TEXT, b BLOB)")
    ]
    for i in range(ROWS):
        row = [i, 2**62 + i, i / 7, f"it's row {i} ✓", bytes([i % 256]) * 3 if i % 5 else None]
        statements.append(
            metadata_pb2.Statement(sql="INSERT INTO items VALUES (?, ?, ?, ?, ?)", params=[value(v) for v in row])
        )
    layers.metadata.Batch(metadata_pb2.BatchRequest(database="app", statements=statements))

    layers.vector.CreateIndex(
        vector_pb2.CreateIndexRequest(
            name="plain",
            dimensions=8,
            metric=vector_pb2.METRIC_EUCLIDEAN,
            index_type=vector_pb2.INDEX_TYPE_HNSW,
            hnsw=vector_pb2.HnswConfig(m=12, ef_construction=64, ef_search=32),
            description="not the gateway's",
        )
    )
    rng = np.random.default_rng(7)
    values = rng.standard_normal((VECTORS, 8)).astype(np.float32)
    for start in range(0, VECTORS, 1000):
        batch = []
        for i in range(start, min(VECTORS, start + 1000)):
            metadata = struct_pb2.Struct()
            metadata.update({"n": i, "tag": ["a", "b"][i % 2], "nested": {"even": i % 2 == 0}})
            batch.append(
                vector_pb2.Vector(
                    id=f"v{i}", values=values[i].tolist(), metadata=metadata, namespace="" if i % 3 else "third"
                )
            )
        layers.vector.UpsertVectors(vector_pb2.UpsertVectorsRequest(index_name="plain", vectors=batch))

    layers.blob.CreateBucket(blob_pb2.CreateBucketRequest(name="assets"))
    for i in range(OBJECTS):
        header = blob_pb2.PutObjectHeader(
            bucket="assets",
            key=f"dir-{i % 4}/naïve file {i}.bin",
            content_type="application/x-test" if i % 2 else "",
            metadata={"index": str(i)} if i % 3 else {},
        )
        body = b"" if i == 0 else bytes(range(256)) * (i % 7)
        messages = [blob_pb2.PutObjectRequest(header=header)]
        if body:
            messages.append(blob_pb2.PutObjectRequest(chunk=body))
        layers.blob.PutObject(iter(messages))


def snapshot(layers: Layers) -> dict[str, Any]:
    rows = layers.metadata.Query(metadata_pb2.QueryRequest(database="app", sql="SELECT * FROM items ORDER BY id"))
    index = layers.vector.GetIndex(vector_pb2.GetIndexRequest(name="plain")).index
    vectors, token = [], ""
    while True:
        page = layers.vector.ListVectors(
            vector_pb2.ListVectorsRequest(
                index_name="plain", page_size=1000, page_token=token, return_values=True, return_metadata=True
            )
        )
        vectors += [(v.namespace, v.id, list(v.values), json_format.MessageToDict(v.metadata)) for v in page.vectors]
        token = page.next_page_token
        if not token:
            break
    objects, token = [], ""
    while True:
        listed = layers.blob.ListObjects(blob_pb2.ListObjectsRequest(bucket="assets", page_token=token))
        for info in listed.objects:
            parts = list(layers.blob.GetObject(blob_pb2.GetObjectRequest(bucket="assets", key=info.key)))
            head = parts[0].header.object
            body = b"".join(p.chunk for p in parts[1:])
            objects.append((info.key, head.content_type, dict(head.metadata), head.etag, body))
        token = listed.next_page_token
        if not token:
            break
    return {
        "rows": [list(r.values) for r in rows.result.rows],
        "index": (index.dimensions, index.metric, index.index_type, index.hnsw.m, index.description),
        "vectors": vectors,
        "objects": objects,
    }


def test_any_database_index_and_bucket_round_trips(tmp_path: Path) -> None:
    with bare_layers(tmp_path / "a") as source_addresses, layers_of(source_addresses) as source:
        fill(source)
        before = snapshot(source)
        manifest = create_backup(tmp_path / "backup", source)
    assert manifest["gateway"] is None
    assert manifest["counts"]["vectors"] == VECTORS and manifest["counts"]["objects"] == OBJECTS
    assert manifest["databases"][0]["rows_written"] == ROWS
    plain = manifest["indexes"][0]
    assert plain["namespaces"] == {"": VECTORS - (VECTORS + 2) // 3, "third": (VECTORS + 2) // 3}
    assert plain["definition"]["index_type"] == "INDEX_TYPE_HNSW"

    with bare_layers(tmp_path / "b") as target_addresses, layers_of(target_addresses) as target:
        restore_backup(tmp_path / "backup", target)
        after = snapshot(target)
    assert len(before["rows"]) == ROWS and len(before["vectors"]) == VECTORS and len(before["objects"]) == OBJECTS
    assert after == before
