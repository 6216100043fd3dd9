"""Collections: a knowledge base's settings, its vector index, its rows and its blob prefix."""

from __future__ import annotations

from typing import Any

import grpc

from gateway import naming
from gateway.catalog import CollectionRecord, now_us
from gateway.deps import Deps
from gateway.paging import after_key, page_limit, split_page
from gateway.upstreams import UpstreamError
from services.runtime.errors import AlreadyExists, InvalidArgument, NotFound
from strata.blob.v1 import blob_pb2
from strata.inference.v1 import inference_pb2
from strata.metadata.v1 import metadata_pb2
from strata.vector.v1 import vector_pb2

DEFAULT_CHUNK_SIZE = 200
DEFAULT_CHUNK_OVERLAP = 30


def collection_not_found(name: str) -> NotFound:
    return NotFound(f"collection {name!r} does not exist", reason="COLLECTION_NOT_FOUND", metadata={"collection": name})


class Collections:
    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def _embedding_model(self, requested: str) -> inference_pb2.Model:
        reply = await self.deps.upstreams.inference.call(
            "ListModels", inference_pb2.ListModelsRequest(task=inference_pb2.MODEL_TASK_EMBEDDING)
        )
        for model in reply.models:
            if (requested and model.name == requested) or (not requested and model.is_default):
                return model
        if not requested and reply.models:
            return reply.models[0]
        names = ", ".join(m.name for m in reply.models) or "none"
        raise InvalidArgument(
            f"embedding model {requested!r} is not offered by the inference service (available: {names})",
            reason="UNKNOWN_EMBEDDING_MODEL",
        )

    async def create(
        self, name: str, description: str, embedding_model: str, chunk_size: int, chunk_overlap: int | None
    ) -> CollectionRecord:
        naming.check_collection_name(name)
        if len(description.encode()) > 1024:
            raise InvalidArgument("description is longer than 1,024 bytes", reason="DESCRIPTION_TOO_LONG")
        model = await self._embedding_model(embedding_model)
        size = chunk_size or DEFAULT_CHUNK_SIZE
        overlap = DEFAULT_CHUNK_OVERLAP if chunk_overlap is None else chunk_overlap
        limit = min(512, model.max_input_tokens - 2 if model.max_input_tokens > 2 else 512)
        if not 32 <= size <= limit:
            raise InvalidArgument(
                f"chunk_size_tokens {size} is outside 32..{limit} (the model reads {model.max_input_tokens} tokens)",
                reason="BAD_CHUNKING",
            )
        if not 0 <= overlap <= size // 2:
            raise InvalidArgument(
                f"chunk_overlap_tokens {overlap} is outside 0..{size // 2} (half the chunk size)", reason="BAD_CHUNKING"
            )
        existing = await self.deps.catalog.get_collection(name)
        if existing is not None and existing.state != "creating":
            raise AlreadyExists(f"collection {name!r} already exists", reason="COLLECTION_EXISTS")
        record = CollectionRecord(
            name=name,
            description=description,
            embedding_model=model.name,
            dimensions=model.dimensions,
            chunk_size=size,
            chunk_overlap=overlap,
            state="creating",
            create_time_us=now_us(),
        )
        if existing is None:
            try:
                await self.deps.catalog.insert_collection(record)
            except UpstreamError as exc:
                if exc.upstream_code == grpc.StatusCode.ALREADY_EXISTS:
                    raise AlreadyExists(f"collection {name!r} already exists", reason="COLLECTION_EXISTS") from exc
                raise
        else:
            record = existing
        try:
            await self.deps.upstreams.vector.call(
                "CreateIndex",
                vector_pb2.CreateIndexRequest(
                    name=naming.index_name(name),
                    dimensions=record.dimensions,
                    metric=vector_pb2.METRIC_COSINE,
                    description=f"strata collection {name}",
                ),
            )
        except UpstreamError as exc:
            if exc.upstream_code != grpc.StatusCode.ALREADY_EXISTS:
                raise
        await self.deps.catalog.set_collection_state(name, "ready")
        return await self.get(name)

    async def get(self, name: str) -> CollectionRecord:
        record = await self.deps.catalog.get_collection(name, with_counts=True)
        if record is None or record.state != "ready":
            raise collection_not_found(name)
        return record

    async def require(self, name: str) -> CollectionRecord:
        """The collection's settings (no counts), or NOT_FOUND."""
        record = await self.deps.catalog.get_collection(name)
        if record is None or record.state != "ready":
            raise collection_not_found(name)
        return record

    async def list(self, page_size: int, page_token: str) -> tuple[list[CollectionRecord], str]:
        limit = page_limit(page_size)
        records = await self.deps.catalog.list_collections(after_key(page_token, "collections"), limit + 1)
        return split_page(records, limit, lambda r: r.name, "collections")

    async def delete(self, name: str) -> None:
        record = await self.deps.catalog.get_collection(name)
        if record is None:
            raise collection_not_found(name)
        # Invisible first, so a crash part-way leaves nothing a user sees; `finish_delete` is retryable.
        await self.deps.catalog.set_collection_state(name, "deleting")
        await self.finish_delete(name)

    async def finish_delete(self, name: str) -> None:
        try:
            await self.deps.upstreams.vector.call(
                "DeleteIndex", vector_pb2.DeleteIndexRequest(name=naming.index_name(name))
            )
        except UpstreamError as exc:
            if exc.upstream_code != grpc.StatusCode.NOT_FOUND:
                raise
        await delete_blob_prefix(self.deps, naming.blob_prefix(name))
        await self.deps.catalog.delete_collection_rows(name)


async def call_index(deps: Deps, collection: str, method: str, request: Any) -> Any:
    """A VectorService call on the collection's index. The gateway never names a namespace, so by
    the contract a NOT_FOUND means the index itself is gone: the collection does not exist."""
    try:
        return await deps.upstreams.vector.call(method, request)
    except UpstreamError as exc:
        if exc.upstream_code == grpc.StatusCode.NOT_FOUND:
            raise collection_not_found(collection) from exc
        raise


async def delete_blob_prefix(deps: Deps, prefix: str) -> None:
    blob = deps.upstreams.blob
    token = ""
    while True:
        page = await blob.call(
            "ListObjects",
            blob_pb2.ListObjectsRequest(bucket=deps.settings.bucket, prefix=prefix, page_size=1000, page_token=token),
        )
        for obj in page.objects:
            await blob.call("DeleteObject", blob_pb2.DeleteObjectRequest(bucket=deps.settings.bucket, key=obj.key))
        token = page.next_page_token
        if not token:
            return


async def ensure_storage(deps: Deps) -> None:
    """The gateway's database, tables and bucket exist (idempotent; run at start)."""
    try:
        await deps.upstreams.metadata.call(
            "CreateDatabase", metadata_pb2.CreateDatabaseRequest(name=deps.settings.database)
        )
    except UpstreamError as exc:
        if exc.upstream_code != grpc.StatusCode.ALREADY_EXISTS:
            raise
    await deps.catalog.ensure_schema()
    try:
        await deps.upstreams.blob.call("CreateBucket", blob_pb2.CreateBucketRequest(name=deps.settings.bucket))
    except UpstreamError as exc:
        if exc.upstream_code != grpc.StatusCode.ALREADY_EXISTS:
            raise
