"""Contract: CopyObject and multipart uploads."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator

import grpc
import pytest

from strata.blob.v1 import blob_pb2

from .client import code_of, get, list_all, md5, new_bucket_name, put, upload_part

# S3 requires every part but the last to hold at least 5 MiB; the suite uses sizes any backend accepts.
FIVE_MIB = 5 * 1024 * 1024


def test_copy_keeps_metadata(stub, bucket) -> None:
    source = put(stub, bucket, "src", b"payload", content_type="text/plain", metadata={"a": "1"})
    copy = stub.CopyObject(
        blob_pb2.CopyObjectRequest(
            source_bucket=bucket, source_key="src", destination_bucket=bucket, destination_key="dst"
        )
    ).object
    assert (copy.key, copy.size, copy.etag) == ("dst", 7, source.etag)
    header, body = get(stub, bucket, "dst")
    assert body == b"payload"
    assert (header.object.content_type, dict(header.object.metadata)) == ("text/plain", {"a": "1"})


def test_copy_replaces_metadata_across_buckets(stub, bucket) -> None:
    other = new_bucket_name()
    stub.CreateBucket(blob_pb2.CreateBucketRequest(name=other))
    try:
        put(stub, bucket, "src", b"payload", content_type="text/plain", metadata={"a": "1"})
        stub.CopyObject(
            blob_pb2.CopyObjectRequest(
                source_bucket=bucket,
                source_key="src",
                destination_bucket=other,
                destination_key="dst",
                metadata_directive=blob_pb2.METADATA_DIRECTIVE_REPLACE,
                content_type="application/json",
                metadata={"b": "2"},
            )
        )
        header, body = get(stub, other, "dst")
        assert body == b"payload"
        assert (header.object.content_type, dict(header.object.metadata)) == ("application/json", {"b": "2"})
        assert get(stub, bucket, "src")[0].object.metadata == {"a": "1"}
    finally:
        stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=other, key="dst"))
        stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=other))


def test_copy_errors(stub, bucket) -> None:
    put(stub, bucket, "src", b"payload")
    put(stub, bucket, "taken", b"other")
    cases = [
        ({"source_key": "missing", "destination_key": "d"}, grpc.StatusCode.NOT_FOUND),
        ({"source_key": "src", "destination_key": ""}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"source_key": "src", "destination_key": "d", "metadata_directive": 99}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"source_key": "src", "destination_key": "d", "source_conditions": blob_pb2.Conditions(if_match="0" * 32)},
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            {
                "source_key": "src",
                "destination_key": "taken",
                "destination_conditions": blob_pb2.Conditions(if_none_match="*"),
            },
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ]
    for fields, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            stub.CopyObject(blob_pb2.CopyObjectRequest(source_bucket=bucket, destination_bucket=bucket, **fields))
        assert code_of(err.value) == code, fields
    with pytest.raises(grpc.RpcError) as err:
        stub.CopyObject(
            blob_pb2.CopyObjectRequest(
                source_bucket=bucket, source_key="src", destination_bucket=new_bucket_name(), destination_key="d"
            )
        )
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND
    assert sorted(list_all(stub, bucket)[0]) == ["src", "taken"]
    assert get(stub, bucket, "taken")[1] == b"other"


def _create(stub, bucket, key="big", **fields) -> str:
    return stub.CreateMultipartUpload(blob_pb2.CreateMultipartUploadRequest(bucket=bucket, key=key, **fields)).upload_id


def _complete(stub, bucket, upload_id, parts, key="big", **fields):
    return stub.CompleteMultipartUpload(
        blob_pb2.CompleteMultipartUploadRequest(
            bucket=bucket,
            key=key,
            upload_id=upload_id,
            parts=[blob_pb2.CompletedPart(part_number=n, etag=e) for n, e in parts],
            **fields,
        ),
        timeout=60,
    ).object


def test_multipart_round_trip(stub, bucket) -> None:
    first, second = os.urandom(FIVE_MIB), os.urandom(1234)
    upload_id = _create(stub, bucket, content_type="text/x-big", metadata={"m": "v"})
    # A re-uploaded part number replaces the earlier one.
    upload_part(stub, bucket, "big", upload_id, 2, b"to be replaced")
    p2 = upload_part(stub, bucket, "big", upload_id, 2, second)
    p1 = upload_part(stub, bucket, "big", upload_id, 1, first)
    assert (p1.part_number, p1.etag, p1.size) == (1, md5(first), len(first))
    assert (p2.etag, p2.size) == (md5(second), len(second))
    listed = stub.ListParts(blob_pb2.ListPartsRequest(bucket=bucket, key="big", upload_id=upload_id)).parts
    assert [(p.part_number, p.etag, p.size) for p in listed] == [(1, p1.etag, p1.size), (2, p2.etag, p2.size)]
    paged = stub.ListParts(blob_pb2.ListPartsRequest(bucket=bucket, key="big", upload_id=upload_id, page_size=1))
    assert [p.part_number for p in paged.parts] == [1] and paged.next_page_token
    info = _complete(stub, bucket, upload_id, [(1, p1.etag), (2, p2.etag)])
    expected = hashlib.md5(bytes.fromhex(p1.etag) + bytes.fromhex(p2.etag)).hexdigest() + "-2"
    assert (info.size, info.etag) == (len(first) + len(second), expected)
    header, body = get(stub, bucket, "big")
    assert body == first + second
    assert header.object.etag == expected
    assert (header.object.content_type, dict(header.object.metadata)) == ("text/x-big", {"m": "v"})
    with pytest.raises(grpc.RpcError) as err:
        stub.ListParts(blob_pb2.ListPartsRequest(bucket=bucket, key="big", upload_id=upload_id))
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND


def test_complete_with_bad_part_lists_is_invalid_argument(stub, bucket) -> None:
    upload_id = _create(stub, bucket)
    p1 = upload_part(stub, bucket, "big", upload_id, 1, os.urandom(FIVE_MIB))
    p2 = upload_part(stub, bucket, "big", upload_id, 2, b"tail")
    for parts in (
        [],
        [(2, p2.etag), (1, p1.etag)],
        [(1, p1.etag), (1, p1.etag)],
        [(1, p1.etag), (3, p2.etag)],
        [(1, p1.etag), (2, "0" * 32)],
    ):
        with pytest.raises(grpc.RpcError) as err:
            _complete(stub, bucket, upload_id, parts)
        assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT, parts
    assert list_all(stub, bucket)[0] == []
    # The upload survives bad attempts and can still be completed.
    assert _complete(stub, bucket, upload_id, [(1, p1.etag), (2, p2.etag)]).size == FIVE_MIB + 4


@pytest.mark.parametrize("number", [0, -1, 10_001])
def test_bad_part_number_is_invalid_argument(stub, bucket, number) -> None:
    upload_id = _create(stub, bucket)
    with pytest.raises(grpc.RpcError) as err:
        upload_part(stub, bucket, "big", upload_id, number, b"x")
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
    stub.AbortMultipartUpload(blob_pb2.AbortMultipartUploadRequest(bucket=bucket, key="big", upload_id=upload_id))


def test_unknown_upload_is_not_found(stub, bucket) -> None:
    upload_id = _create(stub, bucket)
    stub.AbortMultipartUpload(blob_pb2.AbortMultipartUploadRequest(bucket=bucket, key="big", upload_id=upload_id))
    for call in (
        lambda: upload_part(stub, bucket, "big", upload_id, 1, b"x"),
        lambda: _complete(stub, bucket, upload_id, [(1, md5(b"x"))]),
        lambda: stub.ListParts(blob_pb2.ListPartsRequest(bucket=bucket, key="big", upload_id=upload_id)),
        lambda: stub.AbortMultipartUpload(
            blob_pb2.AbortMultipartUploadRequest(bucket=bucket, key="big", upload_id=upload_id)
        ),
        lambda: upload_part(stub, bucket, "big", "no-such-upload", 1, b"x"),
    ):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert code_of(err.value) == grpc.StatusCode.NOT_FOUND
    assert list_all(stub, bucket)[0] == []


def test_complete_if_none_match_star(stub, bucket) -> None:
    put(stub, bucket, "big", b"existing")
    upload_id = _create(stub, bucket)
    part = upload_part(stub, bucket, "big", upload_id, 1, b"new")
    with pytest.raises(grpc.RpcError) as err:
        _complete(stub, bucket, upload_id, [(1, part.etag)], conditions=blob_pb2.Conditions(if_none_match="*"))
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert get(stub, bucket, "big")[1] == b"existing"
    stub.AbortMultipartUpload(blob_pb2.AbortMultipartUploadRequest(bucket=bucket, key="big", upload_id=upload_id))


def test_upload_part_stream_needs_a_header(stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.UploadPart(iter([blob_pb2.UploadPartRequest(chunk=b"x")]))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_cancelled_part_upload_stores_nothing(stub, bucket) -> None:
    class Stop(Exception):
        pass

    upload_id = _create(stub, bucket)

    def requests(attempt: int) -> Iterator[blob_pb2.UploadPartRequest]:
        yield blob_pb2.UploadPartRequest(
            header=blob_pb2.UploadPartHeader(bucket=bucket, key="big", upload_id=upload_id, part_number=attempt + 1)
        )
        yield blob_pb2.UploadPartRequest(chunk=b"partial part")
        raise Stop  # the client dies before ending the stream

    for attempt in range(10):
        with pytest.raises(grpc.RpcError) as err:
            stub.UploadPart(requests(attempt))
        assert code_of(err.value) in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN)
    assert list(stub.ListParts(blob_pb2.ListPartsRequest(bucket=bucket, key="big", upload_id=upload_id)).parts) == []
    stub.AbortMultipartUpload(blob_pb2.AbortMultipartUploadRequest(bucket=bucket, key="big", upload_id=upload_id))
