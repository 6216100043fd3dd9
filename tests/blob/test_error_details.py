"""Errors carry a google.rpc.ErrorInfo with a machine reason, and clear messages (our server's own reasons)."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strata.blob.v1 import blob_pb2
from tests.contract.blob.client import put


def _info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_reasons_and_messages(fs_stub) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="errs"))
    put(fs_stub, "errs", "k", b"x")
    cases = [
        (lambda: fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="errs")), "BUCKET_EXISTS", "already exists"),
        (lambda: fs_stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name="errs")), "BUCKET_NOT_EMPTY", "still holds"),
        (lambda: fs_stub.HeadObject(blob_pb2.HeadObjectRequest(bucket="errs", key="no")), "OBJECT_NOT_FOUND", "'no'"),
        (lambda: put(fs_stub, "errs", "x" * 1025, b""), "KEY_TOO_LONG", "1025 bytes"),
        (lambda: put(fs_stub, "errs", "k", b"", if_none_match="*"), "PRECONDITION_FAILED", "already exists"),
        (
            lambda: list(fs_stub.GetObject(blob_pb2.GetObjectRequest(bucket="errs", key="k", range={"offset": 5}))),
            "RANGE_NOT_SATISFIABLE",
            "object has 1 bytes",
        ),
        (
            lambda: fs_stub.ListObjects(blob_pb2.ListObjectsRequest(bucket="errs", page_token="zz")),
            "INVALID_PAGE_TOKEN",
            "page_token",
        ),
    ]
    for call, reason, words in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        info = _info(err.value)
        assert (info.reason, info.domain) == (reason, "strata.dev"), err.value.details()
        assert words in err.value.details()
