"""Contract: CreateBucket, ListBuckets, DeleteBucket."""

from __future__ import annotations

import grpc
import pytest

from strata.blob.v1 import blob_pb2

from .client import code_of, new_bucket_name, put


def all_bucket_names(stub, page_size: int = 0) -> list[str]:
    names: list[str] = []
    token = ""
    while True:
        page = stub.ListBuckets(blob_pb2.ListBucketsRequest(page_size=page_size, page_token=token))
        assert page_size == 0 or len(page.buckets) <= page_size
        names += [b.name for b in page.buckets]
        token = page.next_page_token
        if not token:
            return names


def test_create_list_delete(stub) -> None:
    name = new_bucket_name()
    created = stub.CreateBucket(blob_pb2.CreateBucketRequest(name=name)).bucket
    assert created.name == name
    assert created.create_time.seconds > 0
    assert name in all_bucket_names(stub)
    stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=name))
    assert name not in all_bucket_names(stub)


def test_list_buckets_pages_in_name_order(stub) -> None:
    made = sorted(new_bucket_name() for _ in range(3))
    for name in made:
        stub.CreateBucket(blob_pb2.CreateBucketRequest(name=name))
    try:
        paged = all_bucket_names(stub, page_size=1)
        assert paged == sorted(paged)
        assert len(paged) == len(set(paged))
        assert set(made) <= set(paged)
    finally:
        for name in made:
            stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=name))


def test_create_existing_is_already_exists(stub, bucket) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateBucket(blob_pb2.CreateBucketRequest(name=bucket))
    assert code_of(err.value) == grpc.StatusCode.ALREADY_EXISTS


@pytest.mark.parametrize("name", ["", "ab", "UPPER", "a" * 64, "-start", "end-", "has_underscore", "a..b", "../x"])
def test_bad_bucket_name_is_invalid_argument(stub, name) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.CreateBucket(blob_pb2.CreateBucketRequest(name=name))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT


def test_delete_missing_is_not_found(stub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=new_bucket_name()))
    assert code_of(err.value) == grpc.StatusCode.NOT_FOUND


def test_delete_non_empty_is_failed_precondition_and_keeps_objects(stub, bucket) -> None:
    put(stub, bucket, "k", b"v")
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=bucket))
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.HeadObject(blob_pb2.HeadObjectRequest(bucket=bucket, key="k")).object.size == 1


def test_delete_with_pending_upload_is_failed_precondition(stub, bucket) -> None:
    upload = stub.CreateMultipartUpload(blob_pb2.CreateMultipartUploadRequest(bucket=bucket, key="big")).upload_id
    with pytest.raises(grpc.RpcError) as err:
        stub.DeleteBucket(blob_pb2.DeleteBucketRequest(name=bucket))
    assert code_of(err.value) == grpc.StatusCode.FAILED_PRECONDITION
    stub.AbortMultipartUpload(blob_pb2.AbortMultipartUploadRequest(bucket=bucket, key="big", upload_id=upload))


@pytest.mark.parametrize("request_", [{"page_size": -1}, {"page_size": 1001}, {"page_token": "not-a-token"}])
def test_bad_list_buckets_paging_is_invalid_argument(stub, request_) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ListBuckets(blob_pb2.ListBucketsRequest(**request_))
    assert code_of(err.value) == grpc.StatusCode.INVALID_ARGUMENT
