"""Filesystem backend: hostile keys stay inside the data directory and stay distinct."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from strata.blob.v1 import blob_pb2
from tests.contract.blob.client import get, list_all, put

HOSTILE = [
    "..",
    "../escape",
    "../../../../../../tmp/strata-escape",
    "/etc/strata-escape",
    "/abs/path",
    "back\\slash",
    "..\\..\\windows",
    "a/../../b",
    "./.",
    "a//b",
    "trailing/",
    "COM1",
    "x" * 1024,
    "é" * 512,
    "a",
    "A",
    "a/b",
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_hostile_keys_round_trip_inside_the_data_dir(fs_stub, data_dir: Path, tmp_path: Path) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="keys"))
    outside_before = _files(tmp_path) - _files(data_dir)
    for index, key in enumerate(HOSTILE):
        put(fs_stub, "keys", key, f"value {index}".encode())
    for index, key in enumerate(HOSTILE):
        assert get(fs_stub, "keys", key)[1] == f"value {index}".encode(), key
    assert list_all(fs_stub, "keys")[0] == sorted(HOSTILE, key=lambda k: k.encode())
    # Nothing was written outside the bucket's objects folder, and no path named after a key exists anywhere.
    assert _files(tmp_path) - _files(data_dir) == outside_before
    objects = data_dir / "blob" / "buckets" / "keys" / "objects"
    assert len(_files(objects)) == len(HOSTILE)
    assert not Path("/etc/strata-escape").exists()
    assert not Path("/tmp/strata-escape").exists()
    for path in _files(objects):
        assert all(len(part.encode()) <= 255 for part in path.relative_to(objects).parts)


def test_nul_and_oversized_keys_are_refused(fs_stub, data_dir: Path) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="keys"))
    for key in ("a\x00b", "\x00", "x" * 1025):
        with pytest.raises(grpc.RpcError) as err:
            put(fs_stub, "keys", key, b"x")
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _files(data_dir / "blob" / "buckets" / "keys" / "objects") == set()
    assert os.listdir(data_dir / "blob" / "tmp") == []


def test_hostile_bucket_names_are_refused(fs_stub, data_dir: Path) -> None:
    for name in ("..", "../x", "a/b", "x\\y", "/abs", ".hidden", "tmp/../../x"):
        with pytest.raises(grpc.RpcError) as err:
            fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name=name))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert os.listdir(data_dir / "blob" / "buckets") == []


def test_hostile_upload_ids_are_not_found(fs_stub) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="keys"))
    for upload_id in ("..", "../../buckets", "/etc", "x" * 32):
        with pytest.raises(grpc.RpcError) as err:
            fs_stub.ListParts(blob_pb2.ListPartsRequest(bucket="keys", key="k", upload_id=upload_id))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
