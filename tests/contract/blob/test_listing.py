"""Contract: ListObjects with prefix, delimiter, start_after and page tokens."""

from __future__ import annotations

import grpc
import pytest

from strata.blob.v1 import blob_pb2

from .client import code_of, list_all, put

KEYS = ["a", "a/b", "a/c/d", "a/c/e", "b", "b/x", "c.txt", "d/1", "d/2", "d/3", "é", "z/y/z"]


@pytest.fixture
def filled(stub, bucket) -> str:
    for key in KEYS:
        put(stub, bucket, key, key.encode())
    return bucket


@pytest.mark.parametrize("page_size", [0, 1, 2, 5, 1000])
def test_paging_returns_every_key_once_in_order(stub, filled, page_size) -> None:
    keys, prefixes, pages = list_all(stub, filled, page_size=page_size)
    assert keys == sorted(KEYS, key=lambda k: k.encode())
    assert prefixes == []
    if page_size:
        assert pages == -(-len(KEYS) // page_size)


def test_objects_carry_size_and_etag(stub, filled) -> None:
    page = stub.ListObjects(blob_pb2.ListObjectsRequest(bucket=filled, prefix="c."))
    assert [(o.key, o.size) for o in page.objects] == [("c.txt", 5)]
    head = stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=filled, key="c.txt")).object
    assert page.objects[0].etag == head.etag
    assert page.objects[0].last_modified.seconds > 0


def test_prefix(stub, filled) -> None:
    assert list_all(stub, filled, prefix="a/")[0] == ["a/b", "a/c/d", "a/c/e"]
    assert list_all(stub, filled, prefix="nothing")[0] == []


@pytest.mark.parametrize("page_size", [0, 1, 2, 3])
def test_delimiter_rolls_up_common_prefixes(stub, filled, page_size) -> None:
    keys, prefixes, _ = list_all(stub, filled, page_size=page_size, delimiter="/")
    assert keys == ["a", "b", "c.txt", "é"]
    assert prefixes == ["a/", "b/", "d/", "z/"]


def test_prefix_and_delimiter(stub, filled) -> None:
    keys, prefixes, _ = list_all(stub, filled, prefix="a/", delimiter="/")
    assert (keys, prefixes) == (["a/b"], ["a/c/"])


def test_start_after(stub, filled) -> None:
    assert list_all(stub, filled, start_after="b/x")[0] == ["c.txt", "d/1", "d/2", "d/3", "z/y/z", "é"]
    keys, prefixes, _ = list_all(stub, filled, start_after="b", delimiter="/")
    assert (keys, prefixes) == (["c.txt", "é"], ["b/", "d/", "z/"])


@pytest.mark.parametrize("request_", [{"page_size": 1001}, {"page_size": -1}, {"page_token": "garbage!"}])
def test_bad_paging_is_invalid_argument(stub, bucket, request_) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ListObjects(blob_pb2.ListObjectsRequest(bucket=bucket, **request_))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
