"""The filesystem backend where Linux's copy_file_range is missing (macOS) or refuses the files:
copies and multipart completions go through memory and keep every byte."""

from __future__ import annotations

import errno
import os

import pytest

from strata.blob.v1 import blob_pb2
from tests.contract.blob.client import get, put, upload_part


def _refusing(*args: object) -> int:
    raise OSError(errno.EXDEV, "Invalid cross-device link")


@pytest.mark.parametrize("kernel_copy", ["missing", "refused"])
def test_copy_and_multipart_without_a_kernel_copy(fs_stub, monkeypatch: pytest.MonkeyPatch, kernel_copy: str) -> None:
    if kernel_copy == "missing":
        monkeypatch.delattr(os, "copy_file_range", raising=False)
    else:
        monkeypatch.setattr(os, "copy_file_range", _refusing, raising=False)
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="bkt"))
    data = os.urandom(2 * 1024 * 1024 + 17)  # over one copy step
    source = put(fs_stub, "bkt", "src", data)
    copy = fs_stub.CopyObject(
        blob_pb2.CopyObjectRequest(
            source_bucket="bkt", source_key="src", destination_bucket="bkt", destination_key="dst"
        )
    ).object
    assert (copy.size, copy.etag) == (len(data), source.etag)
    assert get(fs_stub, "bkt", "dst")[1] == data

    first, second = os.urandom(5 * 1024 * 1024), os.urandom(1234)
    upload_id = fs_stub.CreateMultipartUpload(blob_pb2.CreateMultipartUploadRequest(bucket="bkt", key="big")).upload_id
    parts = [upload_part(fs_stub, "bkt", "big", upload_id, n, part) for n, part in ((1, first), (2, second))]
    fs_stub.CompleteMultipartUpload(
        blob_pb2.CompleteMultipartUploadRequest(
            bucket="bkt",
            key="big",
            upload_id=upload_id,
            parts=[blob_pb2.CompletedPart(part_number=p.part_number, etag=p.etag) for p in parts],
        ),
        timeout=60,
    )
    assert get(fs_stub, "bkt", "big")[1] == first + second
