"""Small helpers over the generated BlobService stub, shared by the contract tests."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator, Mapping

import grpc

from strata.blob.v1 import blob_pb2, blob_pb2_grpc

Stub = blob_pb2_grpc.BlobServiceStub


def new_bucket_name() -> str:
    return f"t-{uuid.uuid4().hex[:20]}"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def put_requests(
    bucket: str,
    key: str,
    data: bytes,
    chunk: int = 64 * 1024,
    content_type: str = "",
    metadata: Mapping[str, str] | None = None,
    if_match: str = "",
    if_none_match: str = "",
) -> Iterator[blob_pb2.PutObjectRequest]:
    yield blob_pb2.PutObjectRequest(
        header=blob_pb2.PutObjectHeader(
            bucket=bucket,
            key=key,
            content_type=content_type,
            metadata=dict(metadata or {}),
            conditions=blob_pb2.Conditions(if_match=if_match, if_none_match=if_none_match),
        )
    )
    for start in range(0, len(data), chunk):
        yield blob_pb2.PutObjectRequest(chunk=data[start : start + chunk])


def put(stub: Stub, bucket: str, key: str, data: bytes = b"", **options: object) -> blob_pb2.ObjectInfo:
    return stub.PutObject(put_requests(bucket, key, data, **options), timeout=60).object  # type: ignore[arg-type]


def get(stub: Stub, bucket: str, key: str, **request: object) -> tuple[blob_pb2.GetObjectHeader, bytes]:
    """(header, content) of a GetObject; asserts the stream shape: one header, then chunks only."""
    responses = list(stub.GetObject(blob_pb2.GetObjectRequest(bucket=bucket, key=key, **request), timeout=60))
    assert responses and responses[0].WhichOneof("part") == "header", "GetObject must start with a header"
    assert all(r.WhichOneof("part") == "chunk" for r in responses[1:]), "only chunks may follow the header"
    return responses[0].header, b"".join(r.chunk for r in responses[1:])


def list_all(stub: Stub, bucket: str, page_size: int = 0, **request: object) -> tuple[list[str], list[str], int]:
    """(keys, common prefixes, pages) from paging through a whole listing."""
    keys: list[str] = []
    prefixes: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListObjects(
            blob_pb2.ListObjectsRequest(bucket=bucket, page_size=page_size, page_token=token, **request), timeout=60
        )
        pages += 1
        assert page_size == 0 or len(page.objects) + len(page.common_prefixes) <= page_size
        keys += [o.key for o in page.objects]
        prefixes += page.common_prefixes
        token = page.next_page_token
        if not token:
            return keys, prefixes, pages


def upload_part(
    stub: Stub, bucket: str, key: str, upload_id: str, number: int, data: bytes
) -> blob_pb2.UploadPartResponse:
    def requests() -> Iterator[blob_pb2.UploadPartRequest]:
        yield blob_pb2.UploadPartRequest(
            header=blob_pb2.UploadPartHeader(bucket=bucket, key=key, upload_id=upload_id, part_number=number)
        )
        for start in range(0, len(data), 1024 * 1024):
            yield blob_pb2.UploadPartRequest(chunk=data[start : start + 1024 * 1024])

    return stub.UploadPart(requests(), timeout=60)


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    return call.code()  # type: ignore[no-any-return,attr-defined]
