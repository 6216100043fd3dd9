"""GatewayService over gRPC: translates protobuf to RagApp calls and back, nothing more."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from gateway import naming
from gateway.app import RagApp
from gateway.catalog import FAILED, PENDING, READY, CollectionRecord, DocumentRecord
from gateway.retrieval import AskPlan, Hit
from gateway.upstreams import client_deadline
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc

_STATUS_TO_PB = {
    PENDING: gateway_pb2.DOCUMENT_STATUS_PENDING,
    READY: gateway_pb2.DOCUMENT_STATUS_READY,
    FAILED: gateway_pb2.DOCUMENT_STATUS_FAILED,
}
_STATUS_FROM_PB = {v: k for k, v in _STATUS_TO_PB.items()} | {gateway_pb2.DOCUMENT_STATUS_UNSPECIFIED: ""}


def _follow_deadline(context: grpc.aio.ServicerContext) -> None:
    remaining = context.time_remaining()
    client_deadline.set(time.monotonic() + remaining if remaining is not None else None)


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def _struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def collection_pb(record: CollectionRecord) -> gateway_pb2.Collection:
    return gateway_pb2.Collection(
        name=record.name,
        description=record.description,
        embedding_model=record.embedding_model,
        dimensions=record.dimensions,
        chunking=gateway_pb2.ChunkingConfig(
            chunk_size_tokens=record.chunk_size, chunk_overlap_tokens=record.chunk_overlap
        ),
        document_count=record.document_count,
        chunk_count=record.chunk_count,
        create_time=_timestamp(record.create_time_us),
    )


def document_pb(record: DocumentRecord) -> gateway_pb2.Document:
    return gateway_pb2.Document(
        id=record.id,
        collection=record.collection,
        status=_STATUS_TO_PB.get(record.status, gateway_pb2.DOCUMENT_STATUS_UNSPECIFIED),
        error=record.error,
        content_type=record.content_type,
        size_bytes=record.size_bytes,
        etag=record.etag,
        chunk_count=record.chunk_count if record.status == READY else 0,
        metadata=_struct(record.metadata),
        create_time=_timestamp(record.create_time_us),
        update_time=_timestamp(record.update_time_us),
    )


def hit_pb(hit: Hit) -> gateway_pb2.SearchResult:
    return gateway_pb2.SearchResult(
        document_id=hit.document_id,
        chunk_index=hit.chunk_index,
        text=hit.text,
        score=hit.score,
        metadata=_struct(hit.metadata),
    )


def sources_pb(plan: AskPlan) -> list[gateway_pb2.Source]:
    return [gateway_pb2.Source(citation=i, chunk=hit_pb(h)) for i, h in enumerate(plan.sources, start=1)]


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, app: RagApp) -> None:
        self.app = app

    async def CreateCollection(self, request: gateway_pb2.CreateCollectionRequest, context: Any) -> Any:
        _follow_deadline(context)
        chunking = request.chunking
        record = await self.app.collections.create(
            request.name,
            request.description,
            request.embedding_model,
            chunking.chunk_size_tokens,
            chunking.chunk_overlap_tokens if chunking.HasField("chunk_overlap_tokens") else None,
        )
        return gateway_pb2.CreateCollectionResponse(collection=collection_pb(record))

    async def GetCollection(self, request: gateway_pb2.GetCollectionRequest, context: Any) -> Any:
        _follow_deadline(context)
        return gateway_pb2.GetCollectionResponse(collection=collection_pb(await self.app.collections.get(request.name)))

    async def ListCollections(self, request: gateway_pb2.ListCollectionsRequest, context: Any) -> Any:
        _follow_deadline(context)
        records, token = await self.app.collections.list(request.page_size, request.page_token)
        return gateway_pb2.ListCollectionsResponse(
            collections=[collection_pb(r) for r in records], next_page_token=token
        )

    async def DeleteCollection(self, request: gateway_pb2.DeleteCollectionRequest, context: Any) -> Any:
        _follow_deadline(context)
        await self.app.collections.delete(request.name)
        return gateway_pb2.DeleteCollectionResponse()

    async def PutDocument(self, request: gateway_pb2.PutDocumentRequest, context: Any) -> Any:
        _follow_deadline(context)
        is_text = request.WhichOneof("content") == "text"
        data = request.text.encode() if is_text else request.data
        record, changed = await self.app.documents.put(
            request.collection,
            request.document_id,
            data,
            request.content_type,
            naming.user_dict(request.metadata, "document metadata", "INVALID_METADATA"),
            is_text=is_text or request.WhichOneof("content") is None,
        )
        return gateway_pb2.PutDocumentResponse(document=document_pb(record), changed=changed)

    async def GetDocument(self, request: gateway_pb2.GetDocumentRequest, context: Any) -> Any:
        _follow_deadline(context)
        record = await self.app.documents.get(request.collection, request.document)
        return gateway_pb2.GetDocumentResponse(document=document_pb(record))

    async def ListDocuments(self, request: gateway_pb2.ListDocumentsRequest, context: Any) -> Any:
        _follow_deadline(context)
        records, token = await self.app.documents.list(
            request.collection, request.page_size, request.page_token, _STATUS_FROM_PB.get(request.status)
        )
        return gateway_pb2.ListDocumentsResponse(documents=[document_pb(r) for r in records], next_page_token=token)

    async def DeleteDocument(self, request: gateway_pb2.DeleteDocumentRequest, context: Any) -> Any:
        _follow_deadline(context)
        await self.app.documents.delete(request.collection, request.document)
        return gateway_pb2.DeleteDocumentResponse()

    async def Search(self, request: gateway_pb2.SearchRequest, context: Any) -> Any:
        _follow_deadline(context)
        hits = await self.app.retrieval.search(
            request.collection, request.query, request.top_k, request.filter if request.HasField("filter") else None
        )
        return gateway_pb2.SearchResponse(results=[hit_pb(h) for h in hits])

    async def Ask(self, request: gateway_pb2.AskRequest, context: Any) -> Any:
        _follow_deadline(context)
        plan = await self.app.retrieval.plan(request.collection, request.question, request.options)
        answer = ""
        usage = gateway_pb2.Usage()
        async for kind, value in self.app.retrieval.answer_stream(plan, request.options):
            if kind == "delta":
                answer += value
            else:
                usage = gateway_pb2.Usage(input_tokens=value.input_tokens, output_tokens=value.output_tokens)
        return gateway_pb2.AskResponse(answer=answer, sources=sources_pb(plan), found=plan.found, usage=usage)

    async def AskStream(
        self, request: gateway_pb2.AskStreamRequest, context: Any
    ) -> AsyncIterator[gateway_pb2.AskStreamResponse]:
        _follow_deadline(context)
        plan = await self.app.retrieval.plan(request.collection, request.question, request.options)
        yield gateway_pb2.AskStreamResponse(sources=gateway_pb2.AskSources(sources=sources_pb(plan), found=plan.found))
        async for kind, value in self.app.retrieval.answer_stream(plan, request.options):
            if kind == "delta":
                yield gateway_pb2.AskStreamResponse(delta=value)
            else:
                usage = gateway_pb2.Usage(input_tokens=value.input_tokens, output_tokens=value.output_tokens)
                yield gateway_pb2.AskStreamResponse(done=gateway_pb2.AskDone(usage=usage))
