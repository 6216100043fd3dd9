"""Contract: PutObject, GetObject, HeadObject, DeleteObject, keys, metadata and stream shape."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest

from strata.blob.v1 import blob_pb2

from .client import code_of, get, list_all, md5, new_bucket_name, put, put_requests


def test_round_trip_in_many_chunks(stub, bucket) -> None:
    data = os.urandom(300_000)
    info = put(stub, bucket, "docs/a.bin", data, chunk=7_777, content_type="text/plain", metadata={"lang": "en"})
    assert (info.bucket, info.key, info.size, info.etag) == (bucket, "docs/a.bin", len(data), md5(data))
    assert info.last_modified.seconds > 0
    header, body = get(stub, bucket, "docs/a.bin")
    assert body == data
    assert (header.offset, header.length) == (0, len(data))
    assert header.object.etag == md5(data)
    assert header.object.content_type == "text/plain"
    assert dict(header.object.metadata) == {"lang": "en"}
    head = stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=bucket, key="docs/a.bin")).object
    assert (head.size, head.etag, head.content_type, dict(head.metadata)) == (
        len(data),
        md5(data),
        "text/plain",
        {"lang": "en"},
    )


def test_empty_object_and_default_content_type(stub, bucket) -> None:
    info = put(stub, bucket, "empty")
    assert (info.size, info.etag, info.content_type) == (0, md5(b""), "application/octet-stream")
    header, body = get(stub, bucket, "empty")
    assert body == b"" and header.length == 0


def test_replace_is_whole(stub, bucket) -> None:
    put(stub, bucket, "k", b"old contents", metadata={"v": "1"})
    put(stub, bucket, "k", b"new", content_type="text/x-new")
    header, body = get(stub, bucket, "k")
    assert body == b"new"
    assert header.object.content_type == "text/x-new"
    assert dict(header.object.metadata) == {}


def test_unicode_metadata_round_trips(stub, bucket) -> None:
    put(stub, bucket, "k", b"x", metadata={"title": "Ünïcødé \u2013 東京", "pct": "100% sure"})
    head = stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=bucket, key="k")).object
    assert dict(head.metadata) == {"title": "Ünïcødé \u2013 東京", "pct": "100% sure"}


# Portable keys. S3-compatible servers differ on "..", a leading "/", "\\", a trailing "/" and path
# segments over 255 bytes (SeaweedFS rewrites or refuses them); tests/blob covers those on the filesystem.
LONGEST = "/".join(["segment"] * 128)[:1023] + "!"
KEYS = ["a", "a/b", "A", "a/b/c", "x y", "ünï/東京.txt", LONGEST, "é/" * 255 + "é"]


def test_tricky_keys_are_distinct_objects(stub, bucket) -> None:
    for index, key in enumerate(KEYS):
        put(stub, bucket, key, f"value {index}".encode())
    for index, key in enumerate(KEYS):
        assert get(stub, bucket, key)[1] == f"value {index}".encode(), key
    keys, _, _ = _list(stub, bucket)
    assert keys == sorted(KEYS, key=lambda k: k.encode())


def _list(stub, bucket):
    return list_all(stub, bucket)


@pytest.mark.parametrize(
    "key", ["", "a" * 1025, "é" * 513, "nul\x00byte"], ids=["empty", "1025-bytes", "513-two-byte-chars", "nul"]
)
def test_bad_key_is_invalid_argument_and_writes_nothing(stub, bucket, key) -> None:
    with pytest.raises(grpc.RpcError) as err:
        put(stub, bucket, key, b"data")
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert _list(stub, bucket)[0] == []


def test_invalid_utf8_key_is_invalid_argument(channel, bucket) -> None:
    # A Python str cannot hold invalid UTF-8, so encode HeadObjectRequest by hand: field 1 bucket, field 2 key.
    raw = bytes([0x0A, len(bucket)]) + bucket.encode() + bytes([0x12, 3]) + b"a\xff\xfe"
    head = channel.unary_unary(
        "/strata.blob.v1.BlobService/HeadObject", response_deserializer=blob_pb2.HeadObjectResponse.FromString
    )
    with pytest.raises(grpc.RpcError) as err:
        head(raw, timeout=10)
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "metadata",
    [{"Upper": "x"}, {"bad key": "x"}, {"k": "v" * 2100}, {"k": "line\nbreak"}],
    ids=["uppercase-key", "space-in-key", "too-large", "control-char"],
)
def test_bad_metadata_is_invalid_argument(stub, bucket, metadata) -> None:
    with pytest.raises(grpc.RpcError) as err:
        put(stub, bucket, "k", b"x", metadata=metadata)
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert _list(stub, bucket)[0] == []


def test_unknown_bucket_is_not_found(stub) -> None:
    missing = new_bucket_name()
    for call in (
        lambda: put(stub, missing, "k", b"x"),
        lambda: get(stub, missing, "k"),
        lambda: stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=missing, key="k")),
        lambda: stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=missing, key="k")),
        lambda: stub.ListObjects(blob_pb2.ListObjectsRequest(bucket=missing)),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert code_of(err.value) == grpc.StatusCode.NOT_FOUND


def test_unknown_key_is_not_found(stub, bucket) -> None:
    for call in (
        lambda: get(stub, bucket, "nope"),
        lambda: stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=bucket, key="nope")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert code_of(err.value) == grpc.StatusCode.NOT_FOUND


def test_delete_is_idempotent(stub, bucket) -> None:
    put(stub, bucket, "k", b"x")
    stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key="k"))
    stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key="k"))
    with pytest.raises(grpc.RpcError) as err:
        get(stub, bucket, "k")
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND


def test_missing_header_is_invalid_argument(stub, bucket) -> None:
    for requests in ([], [blob_pb2.PutObjectRequest(chunk=b"data")]):
        with pytest.raises(grpc.RpcError) as err:
            stub.PutObject(iter(requests))
        assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert _list(stub, bucket)[0] == []


def test_second_header_is_invalid_argument_and_writes_nothing(stub, bucket) -> None:
    requests = list(put_requests(bucket, "k", b"first part"))
    requests += list(put_requests(bucket, "k", b"second"))
    with pytest.raises(grpc.RpcError) as err:
        stub.PutObject(iter(requests))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert _list(stub, bucket)[0] == []


def test_cancelled_put_leaves_old_object(stub, bucket) -> None:
    class Stop(Exception):
        pass

    def requests(data: bytes) -> Iterator[blob_pb2.PutObjectRequest]:
        yield from put_requests(bucket, "k", data)
        raise Stop  # the client dies before ending the stream

    # gRPC sometimes delivers a client's cancel to the server as a clean end of stream, just before the
    # cancellation itself: repeat so that race is exercised.
    for attempt in range(25):
        put(stub, bucket, "k", b"old")
        with pytest.raises(grpc.RpcError) as err:
            stub.PutObject(requests(f"partial new bytes {attempt}".encode()))
        assert code_of(err.value) in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
        assert get(stub, bucket, "k")[1] == b"old", f"attempt {attempt}: a cancelled put was published"


def test_declared_content_length_must_match(stub, bucket) -> None:  # type: ignore[no-untyped-def]
    """A stream that ends short of (or runs past) its declared length writes nothing."""
    import grpc
    import pytest

    from strata.blob.v1 import blob_pb2

    def put(key: str, declared: int, *pieces: bytes):  # type: ignore[no-untyped-def]
        header = blob_pb2.PutObjectHeader(bucket=bucket, key=key, content_length=declared)
        return stub.PutObject(
            iter([blob_pb2.PutObjectRequest(header=header), *(blob_pb2.PutObjectRequest(chunk=p) for p in pieces)])
        )

    assert put("exact", 6, b"abc", b"def").object.size == 6
    for key, declared, pieces in (("short", 10, (b"abc",)), ("long", 2, (b"abc",))):
        with pytest.raises(grpc.RpcError) as caught:
            put(key, declared, *pieces)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "content_length" in (caught.value.details() or "")
        with pytest.raises(grpc.RpcError) as missing:
            stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=bucket, key=key))
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
