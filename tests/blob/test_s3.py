"""S3 backend specifics: multipart streaming of large puts, pinned reads, bucket prefixes, errors, settings."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import boto3
import grpc
import pytest
from botocore.config import Config

from services.blob.backends.s3 import S3Backend
from services.blob.config import BlobSettings
from services.blob.server import create_server
from services.runtime.errors import Aborted
from services.runtime.settings import ConfigError, load
from strata.blob.v1 import blob_pb2, blob_pb2_grpc
from tests.blob.s3_servers import ACCESS_KEY, S3_SERVERS, SECRET_KEY, s3_settings
from tests.contract.blob.client import get, new_bucket_name, put
from tests.support.servers import free_port, serve_in_thread, wait_serving

PART = 5 * 1024 * 1024


@pytest.fixture(params=sorted(S3_SERVERS))
def endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(S3_SERVERS[request.param]))


def _raw_client(endpoint: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def s3_stub(endpoint: str) -> Iterator[blob_pb2_grpc.BlobServiceStub]:
    settings = s3_settings(endpoint, bucket_prefix="it-", s3_part_bytes=PART)
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        with grpc.insecure_channel(address) as channel:
            yield blob_pb2_grpc.BlobServiceStub(channel)


def test_large_put_streams_as_multipart_and_reads_back(s3_stub) -> None:
    bucket = new_bucket_name()
    s3_stub.CreateBucket(blob_pb2.CreateBucketRequest(name=bucket))
    data = os.urandom(2 * PART + 12345)
    info = put(s3_stub, bucket, "big", data, chunk=1 << 20)
    assert info.size == len(data)
    assert info.etag.endswith("-3"), "past one part, the S3 backend uploads in parts"
    header, body = get(s3_stub, bucket, "big")
    assert hashlib.md5(body).digest() == hashlib.md5(data).digest()
    assert header.object.size == len(data)
    ranged = get(s3_stub, bucket, "big", range=blob_pb2.ByteRange(offset=PART - 10, length=20))[1]
    assert ranged == data[PART - 10 : PART + 10]
    s3_stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key="big"))
    s3_stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=bucket))


def test_small_put_has_the_md5_etag(s3_stub) -> None:
    bucket = new_bucket_name()
    s3_stub.CreateBucket(blob_pb2.CreateBucketRequest(name=bucket))
    data = os.urandom(PART)  # exactly one part still goes in one PUT
    assert put(s3_stub, bucket, "k", data).etag == hashlib.md5(data).hexdigest()
    s3_stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key="k"))
    s3_stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=bucket))


def test_reader_pins_its_version(endpoint: str) -> None:
    backend = S3Backend(s3_settings(endpoint, bucket_prefix="pin-"))
    backend.open()
    bucket = new_bucket_name()
    backend.create_bucket(bucket)
    writer = backend.new_object(bucket, "k", "text/plain", {})
    writer.write(b"old bytes")
    writer.commit(lambda current: None)
    reader = backend.open_object(bucket, "k")
    assert reader is not None
    writer = backend.new_object(bucket, "k", "text/plain", {})
    writer.write(b"new bytes!")
    writer.commit(lambda current: None)
    with pytest.raises(Aborted):
        list(reader.read(0, reader.info.size, 1024))
    reader.close()
    backend.delete_object(bucket, "k", lambda current: None)
    backend.delete_bucket(bucket)
    backend.close()


def test_bucket_prefix_maps_and_hides_other_buckets(endpoint: str, s3_stub) -> None:
    raw = _raw_client(endpoint)
    foreign = new_bucket_name()
    raw.create_bucket(Bucket=foreign)
    ours = new_bucket_name()
    s3_stub.CreateBucket(blob_pb2.CreateBucketRequest(name=ours))
    try:
        names = [b.name for b in s3_stub.ListBuckets(blob_pb2.ListBucketsRequest()).buckets]
        assert ours in names and foreign not in names
        raw.head_bucket(Bucket=f"it-{ours}")
    finally:
        raw.delete_bucket(Bucket=foreign)
        s3_stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=ours))


def test_prefix_too_long_for_s3_is_invalid_argument(endpoint: str) -> None:
    settings = s3_settings(endpoint, bucket_prefix="a-rather-long-prefix-for-strata-")
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        with grpc.insecure_channel(address) as channel:
            stub = blob_pb2_grpc.BlobServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.CreateBucket(blob_pb2.CreateBucketRequest(name="b" * 40))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unreachable_store_is_unavailable_and_not_serving() -> None:
    settings = s3_settings(f"http://127.0.0.1:{free_port()}")
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        with pytest.raises(TimeoutError):
            wait_serving(address, timeout=1.5)
        with grpc.insecure_channel(address) as channel:
            stub = blob_pb2_grpc.BlobServiceStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.ListBuckets(blob_pb2.ListBucketsRequest(), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_settings_from_environment() -> None:
    settings = load(
        BlobSettings,
        {
            "STRATA_BLOB_BACKEND": "s3",
            "STRATA_BLOB_S3_ENDPOINT": "http://127.0.0.1:9000",
            "STRATA_BLOB_S3_REGION": "auto",
            "STRATA_BLOB_S3_ACCESS_KEY_ID": "id",
            "STRATA_BLOB_S3_SECRET_ACCESS_KEY": "secret",
            "STRATA_BLOB_S3_BUCKET_PREFIX": "strata-",
            "STRATA_BLOB_S3_PART_BYTES": str(16 << 20),
            "STRATA_BLOB_CHUNK_BYTES": str(256 << 10),
        },
    )
    assert (settings.backend, settings.s3_region, settings.s3_bucket_prefix) == ("s3", "auto", "strata-")
    assert (settings.s3_part_bytes, settings.chunk_bytes) == (16 << 20, 256 << 10)
    assert load(BlobSettings, {}).listen == "127.0.0.1:50054"
    for bad in ({"STRATA_BLOB_BACKEND": "gcs"}, {"STRATA_BLOB_S3_PART_BYTES": "1024"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load(BlobSettings, bad)


@pytest.mark.parametrize("key", ["../escape", "/abs/path", "back\\slash", "a" * 1024])
def test_keys_a_store_cannot_hold_are_invalid_argument_never_internal(s3_stub, key) -> None:
    """SeaweedFS refuses or rewrites some keys that AWS accepts; either way the caller gets a clear answer."""
    bucket = new_bucket_name()
    s3_stub.CreateBucket(blob_pb2.CreateBucketRequest(name=bucket))
    try:
        put(s3_stub, bucket, key, b"value")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
    else:
        assert get(s3_stub, bucket, key)[1] == b"value"
        s3_stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key=key))
    s3_stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=bucket))
