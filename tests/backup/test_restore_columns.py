"""A restore sends vectors in the columnar write form: every vector once, in its namespace, with
its metadata, and no request past gRPC's usual 4 MiB limit."""

from __future__ import annotations

import json

import numpy as np

from gateway.backup.restore import UPSERT_BYTES, _columns


def test_a_batch_becomes_columns_per_namespace_under_the_size_limit() -> None:
    rng = np.random.default_rng(11)
    values = rng.standard_normal((2_000, 2_048)).astype(np.float32)  # 16 MB of values
    records = [
        {"id": f"v{i}", "namespace": ["", "a", "b"][i % 3], "metadata": {"n": i, "tag": "x" * i} if i % 4 else {}}
        for i in range(len(values))
    ]
    seen: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    messages = list(_columns(values, records))
    for columns in messages:
        assert columns.ByteSize() <= UPSERT_BYTES
        rows = np.frombuffer(columns.values, dtype="<f4").reshape(len(columns.ids), -1)
        for vid, row, text in zip(columns.ids, rows, columns.metadata_json, strict=True):
            assert (columns.namespace, vid) not in seen
            seen[(columns.namespace, vid)] = (row, text)
    assert len(messages) >= 6  # three namespaces, each over the limit
    assert len(seen) == len(records)
    for i, record in enumerate(records):
        row, text = seen[(record["namespace"], record["id"])]
        assert np.array_equal(row, values[i])
        assert (json.loads(text) if text else {}) == record["metadata"]
