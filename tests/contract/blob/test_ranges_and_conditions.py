"""Contract: byte ranges and if_match / if_none_match on reads, writes, deletes."""

from __future__ import annotations

import os

import grpc
import pytest

from strata.blob.v1 import blob_pb2

from .client import code_of, get, md5, put

DATA = os.urandom(10_000)


@pytest.fixture
def stored(stub, bucket) -> str:
    put(stub, bucket, "obj", DATA)
    return bucket


@pytest.mark.parametrize(
    ("byte_range", "start", "end"),
    [
        ({"offset": 0, "length": 1}, 0, 1),
        ({"offset": 100, "length": 900}, 100, 1000),
        ({"offset": 9_000}, 9_000, 10_000),
        ({"offset": 9_990, "length": 500}, 9_990, 10_000),
        ({"suffix_length": 10}, 9_990, 10_000),
        ({"suffix_length": 50_000}, 0, 10_000),
        ({"offset": 0, "length": 0}, 0, 10_000),
    ],
)
def test_range(stub, stored, byte_range, start, end) -> None:
    header, body = get(stub, stored, "obj", range=blob_pb2.ByteRange(**byte_range))
    assert body == DATA[start:end]
    assert (header.offset, header.length) == (start, end - start)
    assert header.object.size == len(DATA)
    assert header.object.etag == md5(DATA)


def test_range_past_end_is_out_of_range(stub, stored) -> None:
    with pytest.raises(grpc.RpcError) as err:
        get(stub, stored, "obj", range=blob_pb2.ByteRange(offset=10_000, length=1))
    assert code_of(err.value) == grpc.StatusCode.OUT_OF_RANGE


@pytest.mark.parametrize(
    "byte_range",
    [{"offset": -1}, {"length": -5}, {"suffix_length": -1}, {"offset": 5, "suffix_length": 5}],
    ids=["negative-offset", "negative-length", "negative-suffix", "suffix-with-offset"],
)
def test_malformed_range_is_invalid_argument(stub, stored, byte_range) -> None:
    with pytest.raises(grpc.RpcError) as err:
        get(stub, stored, "obj", range=blob_pb2.ByteRange(**byte_range))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_with_failed_precondition_streams_nothing(stub, stored) -> None:
    for conditions in (blob_pb2.Conditions(if_match="0" * 32), blob_pb2.Conditions(if_none_match=md5(DATA))):
        received = []
        with pytest.raises(grpc.RpcError) as err:
            for message in stub.GetObject(blob_pb2.GetObjectRequest(bucket=stored, key="obj", conditions=conditions)):
                received.append(message)
        assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
        assert received == []


def test_get_and_head_with_holding_preconditions(stub, stored) -> None:
    etag = md5(DATA)
    assert get(stub, stored, "obj", conditions=blob_pb2.Conditions(if_match=etag))[1] == DATA
    assert get(stub, stored, "obj", conditions=blob_pb2.Conditions(if_match=f'"{etag}"'))[1] == DATA
    assert get(stub, stored, "obj", conditions=blob_pb2.Conditions(if_none_match="0" * 32))[1] == DATA
    head = stub.HeadObject(
        blob_pb2.HeadObjectRequest(bucket=stored, key="obj", conditions=blob_pb2.Conditions(if_match=etag))
    )
    assert head.object.etag == etag
    with pytest.raises(grpc.RpcError) as err:
        stub.HeadObject(
            blob_pb2.HeadObjectRequest(bucket=stored, key="obj", conditions=blob_pb2.Conditions(if_match="0" * 32))
        )
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION


def test_if_none_match_star_creates_only_once(stub, bucket) -> None:
    put(stub, bucket, "once", b"first", if_none_match="*")
    with pytest.raises(grpc.RpcError) as err:
        put(stub, bucket, "once", b"second", if_none_match="*")
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert get(stub, bucket, "once")[1] == b"first"


def test_if_match_guards_replace(stub, bucket) -> None:
    first = put(stub, bucket, "k", b"v1")
    with pytest.raises(grpc.RpcError) as err:
        put(stub, bucket, "k", b"v2", if_match="0" * 32)
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert get(stub, bucket, "k")[1] == b"v1"
    second = put(stub, bucket, "k", b"v2", if_match=first.etag)
    assert second.etag == md5(b"v2")
    with pytest.raises(grpc.RpcError) as err:
        put(stub, bucket, "absent", b"x", if_match=first.etag)
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION


def test_delete_if_match(stub, bucket) -> None:
    info = put(stub, bucket, "k", b"v")
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key="k", if_match="0" * 32))
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert get(stub, bucket, "k")[1] == b"v"
    stub.DeleteObject(blob_pb2.DeleteObjectRequest(bucket=bucket, key="k", if_match=info.etag))
    with pytest.raises(grpc.RpcError) as err:
        stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=bucket, key="k"))
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND
