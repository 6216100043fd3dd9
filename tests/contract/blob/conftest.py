"""Runs the blob contract suite against every backend of our server, or against any server.

Set STRATA_CONFORMANCE_ADDR=host:port to certify another implementation of
strata.blob.v1.BlobService: the suite then runs only against that address. It is
read at import time because the shared conftest clears STRATA_* variables per test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from services.blob.config import BlobSettings
from services.blob.server import create_server
from strata.blob.v1 import blob_pb2, blob_pb2_grpc
from tests.blob.s3_servers import S3_SERVERS, moto_endpoint, s3_settings, seaweedfs_endpoint
from tests.support.servers import serve_in_thread

from .client import new_bucket_name

__all__ = ["moto_endpoint", "seaweedfs_endpoint"]  # fixtures, re-exported for this suite

CONFORMANCE_ADDR = os.environ.get("STRATA_CONFORMANCE_ADDR", "")
TARGETS = ["external"] if CONFORMANCE_ADDR else ["fs", *S3_SERVERS]


@pytest.fixture(scope="session", params=TARGETS)
def blob_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Address of a BlobService; the param names the backend behind it."""
    if request.param == "external":
        yield CONFORMANCE_ADDR
        return
    if request.param == "fs":
        settings = BlobSettings(data_dir=tmp_path_factory.mktemp("blob-contract"))
    else:
        endpoint = request.getfixturevalue(S3_SERVERS[request.param])
        settings = s3_settings(endpoint, bucket_prefix="ct-")
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        yield address


@pytest.fixture(scope="session")
def channel(blob_target: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(blob_target, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> blob_pb2_grpc.BlobServiceStub:
    return blob_pb2_grpc.BlobServiceStub(channel)


@pytest.fixture
def bucket(stub: blob_pb2_grpc.BlobServiceStub) -> Iterator[str]:
    """A fresh, empty bucket, emptied and deleted after the test."""
    name = new_bucket_name()
    stub.CreateBucket(blob_pb2.CreateBucketRequest(name=name))
    yield name
    _empty_and_delete(stub, name)


def _empty_and_delete(stub: blob_pb2_grpc.BlobServiceStub, name: str) -> None:
    try:
        while True:
            page = stub.ListObjects(blob_pb2.ListObjectsRequest(bucket=name))
            for obj in page.objects:
                stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=name, key=obj.key))
            if not page.next_page_token:
                break
        stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=name))
    except grpc.RpcError:
        pass  # a test may have deleted it, or left an upload on purpose
