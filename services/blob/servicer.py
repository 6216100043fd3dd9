"""gRPC adapter: protobuf messages in and out of `BlobStore`; no logic of its own."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2

from services.blob.backends.base import BucketInfo, ObjectInfo, PartInfo
from services.blob.conditions import Conditions
from services.blob.store import BlobStore, exactly
from services.blob.wire import add_servicer
from services.runtime.errors import InvalidArgument
from strata.blob.v1 import blob_pb2, blob_pb2_grpc

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

# metadata_directive -> whether CopyObject replaces the metadata (None: a value this server does not know)
_REPLACE_METADATA = {
    blob_pb2.METADATA_DIRECTIVE_UNSPECIFIED: False,
    blob_pb2.METADATA_DIRECTIVE_COPY: False,
    blob_pb2.METADATA_DIRECTIVE_REPLACE: True,
}


def _time(value: datetime) -> timestamp_pb2.Timestamp:
    # Arithmetic instead of Timestamp.FromDatetime: listings convert a thousand of these per page.
    seconds, micros = divmod((value - _EPOCH) // _MICROSECOND, 1_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=micros * 1000)


def _bucket(info: BucketInfo) -> blob_pb2.Bucket:
    return blob_pb2.Bucket(name=info.name, create_time=_time(info.create_time))


def _object(info: ObjectInfo) -> blob_pb2.ObjectInfo:
    return blob_pb2.ObjectInfo(
        bucket=info.bucket,
        key=info.key,
        size=info.size,
        etag=info.etag,
        content_type=info.content_type,
        metadata=dict(info.metadata),
        last_modified=_time(info.last_modified),
    )


def _part(info: PartInfo) -> blob_pb2.Part:
    return blob_pb2.Part(
        part_number=info.part_number, etag=info.etag, size=info.size, last_modified=_time(info.last_modified)
    )


def _conditions(message: blob_pb2.Conditions) -> Conditions:
    return Conditions(if_match=message.if_match, if_none_match=message.if_none_match)


def _abandonment(context: grpc.aio.ServicerContext) -> threading.Event:
    """Set when the call ends; before the store commits, that can only mean the client went away."""
    ended = threading.Event()
    context.add_done_callback(lambda _: ended.set())
    return ended


async def _header_then_chunks(
    requests: AsyncIterator[blob_pb2.PutObjectRequest] | AsyncIterator[blob_pb2.UploadPartRequest], rpc: str
) -> tuple[object, AsyncIterator[bytes]]:
    """Split a client stream into its header and an iterator over the chunks that follow."""
    first = await anext(aiter(requests), None)
    if first is None or first.WhichOneof("part") != "header":
        raise InvalidArgument(f"{rpc} must start with a header message", reason="MISSING_HEADER")

    async def chunks() -> AsyncIterator[bytes]:
        async for message in requests:
            if message.WhichOneof("part") == "header":
                raise InvalidArgument(f"{rpc} got a second header; send exactly one, first", reason="SECOND_HEADER")
            yield message.chunk

    return first.header, chunks()  # type: ignore[union-attr,attr-defined]


class BlobServicer(blob_pb2_grpc.BlobServiceServicer):
    def __init__(self, store: BlobStore) -> None:
        self.store = store

    async def CreateBucket(self, request, context):  # type: ignore[no-untyped-def]
        return blob_pb2.CreateBucketResponse(bucket=_bucket(await self.store.create_bucket(request.name)))

    async def ListBuckets(self, request, context):  # type: ignore[no-untyped-def]
        buckets, token = await self.store.list_buckets(request.page_size, request.page_token)
        return blob_pb2.ListBucketsResponse(buckets=[_bucket(b) for b in buckets], next_page_token=token)

    async def DeleteBucket(self, request, context):  # type: ignore[no-untyped-def]
        await self.store.delete_bucket(request.name)
        return blob_pb2.DeleteBucketResponse()

    async def PutObject(self, request_iterator, context):  # type: ignore[no-untyped-def]
        header, chunks = await _header_then_chunks(request_iterator, "PutObject")
        assert isinstance(header, blob_pb2.PutObjectHeader)
        info = await self.store.put_object(
            header.bucket,
            header.key,
            header.content_type,
            header.metadata,
            _conditions(header.conditions),
            exactly(chunks, header.content_length if header.HasField("content_length") else None),
            _abandonment(context),
        )
        return blob_pb2.PutObjectResponse(object=_object(info))

    async def GetObject(self, request, context):  # type: ignore[no-untyped-def]
        byte_range = None
        if request.HasField("range"):
            byte_range = (request.range.offset, request.range.length, request.range.suffix_length)
        download = await self.store.get_object(request.bucket, request.key, _conditions(request.conditions), byte_range)
        context.add_done_callback(lambda _: download.close())
        async with download:
            yield blob_pb2.GetObjectResponse(
                header=blob_pb2.GetObjectHeader(
                    object=_object(download.info), offset=download.offset, length=download.length
                )
            )
            async for chunk in download.chunks:
                yield blob_pb2.GetObjectResponse(chunk=chunk)

    async def HeadObject(self, request, context):  # type: ignore[no-untyped-def]
        info = await self.store.head_object(request.bucket, request.key, _conditions(request.conditions))
        return blob_pb2.HeadObjectResponse(object=_object(info))

    async def DeleteObject(self, request, context):  # type: ignore[no-untyped-def]
        await self.store.delete_object(request.bucket, request.key, request.if_match)
        return blob_pb2.DeleteObjectResponse()

    async def ListObjects(self, request, context):  # type: ignore[no-untyped-def]
        page = await self.store.list_objects(
            request.bucket,
            request.prefix,
            request.delimiter,
            request.start_after,
            request.page_size,
            request.page_token,
        )
        return blob_pb2.ListObjectsResponse(
            objects=[_object(o) for o in page.objects],
            common_prefixes=page.common_prefixes,
            next_page_token=page.next_page_token,
        )

    async def CopyObject(self, request, context):  # type: ignore[no-untyped-def]
        info = await self.store.copy_object(
            request.source_bucket,
            request.source_key,
            request.destination_bucket,
            request.destination_key,
            _REPLACE_METADATA.get(request.metadata_directive),
            request.content_type,
            request.metadata,
            _conditions(request.source_conditions),
            _conditions(request.destination_conditions),
        )
        return blob_pb2.CopyObjectResponse(object=_object(info))

    async def CreateMultipartUpload(self, request, context):  # type: ignore[no-untyped-def]
        upload_id = await self.store.create_upload(request.bucket, request.key, request.content_type, request.metadata)
        return blob_pb2.CreateMultipartUploadResponse(upload_id=upload_id)

    async def UploadPart(self, request_iterator, context):  # type: ignore[no-untyped-def]
        header, chunks = await _header_then_chunks(request_iterator, "UploadPart")
        assert isinstance(header, blob_pb2.UploadPartHeader)
        part = await self.store.upload_part(
            header.bucket,
            header.key,
            header.upload_id,
            header.part_number,
            exactly(chunks, header.content_length if header.HasField("content_length") else None),
            _abandonment(context),
        )
        return blob_pb2.UploadPartResponse(part_number=part.part_number, etag=part.etag, size=part.size)

    async def CompleteMultipartUpload(self, request, context):  # type: ignore[no-untyped-def]
        info = await self.store.complete_upload(
            request.bucket,
            request.key,
            request.upload_id,
            [(p.part_number, p.etag) for p in request.parts],
            _conditions(request.conditions),
        )
        return blob_pb2.CompleteMultipartUploadResponse(object=_object(info))

    async def AbortMultipartUpload(self, request, context):  # type: ignore[no-untyped-def]
        await self.store.abort_upload(request.bucket, request.key, request.upload_id)
        return blob_pb2.AbortMultipartUploadResponse()

    async def ListParts(self, request, context):  # type: ignore[no-untyped-def]
        parts, token = await self.store.list_parts(
            request.bucket, request.key, request.upload_id, request.page_size, request.page_token
        )
        return blob_pb2.ListPartsResponse(parts=[_part(p) for p in parts], next_page_token=token)


def register(server: grpc.aio.Server, store: BlobStore) -> None:
    add_servicer(BlobServicer(store), server)
