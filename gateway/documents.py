"""Documents: ingest (blob -> extract -> chunk -> embed -> vectors -> rows), get, list, delete, recovery.

Ingest is recorded in the catalog: the document is PENDING while a new
generation is written, and one metadata transaction makes it READY at that
generation. Until then search keeps joining on the old generation (or nothing),
so no search sees half an ingest or a mix of two versions. A failure marks the
document FAILED with the reason and removes what the attempt wrote; a crash
leaves it PENDING for `recover()` at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from google.protobuf import struct_pb2

from gateway import naming
from gateway.catalog import FAILED, PENDING, READY, DocumentRecord, Version
from gateway.chunking import chunk_text
from gateway.collections import Collections, call_index, delete_blob_prefix
from gateway.deps import Deps
from gateway.extract import extract_text, normalize_content_type
from gateway.paging import after_key, page_limit, split_page
from services.runtime.errors import InvalidArgument, NotFound, ResourceExhausted, StrataError
from strata.blob.v1 import blob_pb2
from strata.inference.v1 import inference_pb2
from strata.vector.v1 import vector_pb2

log = logging.getLogger("strata.gateway.ingest")

UPSERT_BATCH = 1000
TOKENIZE_BATCH = 256
BLOB_CHUNK = 1024 * 1024
STATUSES = {"": None, PENDING: PENDING, READY: READY, FAILED: FAILED}


def document_not_found(collection: str, document_id: str) -> NotFound:
    return NotFound(
        f"document {document_id!r} does not exist in collection {collection!r}",
        reason="DOCUMENT_NOT_FOUND",
        metadata={"collection": collection, "document": document_id},
    )


def to_struct(values: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


class Documents:
    def __init__(self, deps: Deps, collections: Collections) -> None:
        self.deps = deps
        self.collections = collections
        # One ingest per document at a time in this process (lock, callers holding or awaiting it);
        # the janitor leaves documents listed here alone.
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @property
    def in_flight(self) -> list[tuple[str, str]]:
        """Documents with an ingest running or waiting in this process."""
        return list(self._locks)

    # -- model calls -----------------------------------------------------------------------------

    async def count_tokens(self, model: str, texts: Sequence[str]) -> list[int]:
        inference = self.deps.upstreams.inference
        batches = [texts[i : i + TOKENIZE_BATCH] for i in range(0, len(texts), TOKENIZE_BATCH)]
        replies = await asyncio.gather(
            *(inference.call("Tokenize", inference_pb2.TokenizeRequest(model=model, inputs=b)) for b in batches)
        )
        return [n for reply in replies for n in reply.token_counts]

    async def embed(self, model: str, texts: Sequence[str]) -> list[list[float]]:
        size = self.deps.settings.embed_batch_size
        gate = asyncio.Semaphore(self.deps.settings.embed_parallelism)
        inference = self.deps.upstreams.inference

        async def one(batch: Sequence[str]) -> list[list[float]]:
            async with gate:
                reply = await inference.call("Embed", inference_pb2.EmbedRequest(model=model, inputs=batch))
            return [list(e.values) for e in reply.embeddings]

        parts = await asyncio.gather(*(one(texts[i : i + size]) for i in range(0, len(texts), size)))
        return [v for part in parts for v in part]

    # -- ingest ------------------------------------------------------------------------------------

    async def put(
        self,
        collection: str,
        document_id: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, Any],
        *,
        is_text: bool,
    ) -> tuple[DocumentRecord, bool]:
        record = await self.collections.require(collection)
        if len(data) > self.deps.settings.max_document_bytes:
            raise ResourceExhausted(
                f"document is {len(data)} bytes; the limit is {self.deps.settings.max_document_bytes}",
                reason="DOCUMENT_TOO_LARGE",
            )
        if not data:
            raise InvalidArgument("document has no content: set text or data", reason="EMPTY_DOCUMENT")
        if not content_type and not is_text:
            raise InvalidArgument("content_type is required with data (e.g. application/pdf)", reason="NO_CONTENT_TYPE")
        kind = normalize_content_type(content_type)
        naming.check_metadata(metadata)
        etag = hashlib.md5(data).hexdigest()
        document_id = naming.check_document_id(document_id or "doc-" + hashlib.sha256(data).hexdigest()[:24])
        # Pure work first: a document whose text cannot be extracted changes nothing.
        text = await asyncio.to_thread(extract_text, data, kind)
        if not text:
            raise InvalidArgument("no text could be extracted from the document", reason="NO_TEXT")

        key = (collection, document_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                return await self._ingest(record, document_id, data, text, kind, etag, metadata)
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _ingest(
        self,
        collection: Any,
        document_id: str,
        data: bytes,
        text: str,
        kind: str,
        etag: str,
        metadata: dict[str, Any],
    ) -> tuple[DocumentRecord, bool]:
        catalog = self.deps.catalog
        name = collection.name
        existing = await catalog.get_document(name, document_id)
        if (
            existing is not None
            and existing.status == READY
            and existing.etag == etag
            and existing.content_type == kind
            and existing.metadata == metadata
        ):
            return existing, False
        generation = 1 if existing is None else max(existing.generation, existing.pending_generation) + 1
        version = Version(kind, len(data), etag, metadata)
        await catalog.begin_ingest(existing, name, document_id, generation, version)
        try:
            chunks = await self._write_generation(collection, document_id, generation, data, text, kind, metadata)
            await catalog.commit_ingest(
                name,
                document_id,
                generation,
                version,
                [(naming.vector_id(document_id, generation, i), i, chunk) for i, chunk in enumerate(chunks)],
            )
        except (StrataError, asyncio.CancelledError) as exc:
            reason = str(exc) if isinstance(exc, StrataError) else "ingest was cancelled"
            await self._abandon(name, document_id, generation, reason)
            raise
        await self._drop_other_generations(name, document_id, generation)
        final = await catalog.get_document(name, document_id)
        assert final is not None
        return final, True

    async def _write_generation(
        self,
        collection: Any,
        document_id: str,
        generation: int,
        data: bytes,
        text: str,
        kind: str,
        metadata: dict[str, Any],
    ) -> list[str]:
        name = collection.name

        async def count(texts: Sequence[str]) -> list[int]:
            return await self.count_tokens(collection.embedding_model, texts)

        store = asyncio.create_task(self._store_bytes(name, document_id, generation, data, kind))
        try:
            chunks = await chunk_text(text, collection.chunk_size, collection.chunk_overlap, count)
            vectors = await self.embed(collection.embedding_model, chunks)
            base = {**metadata, naming.DOC_KEY: naming.document_key(document_id), naming.GENERATION_KEY: generation}
            batch = [
                vector_pb2.Vector(
                    id=naming.vector_id(document_id, generation, i),
                    values=values,
                    metadata=to_struct({**base, "_strata_chunk": i}),
                )
                for i, values in enumerate(vectors)
            ]
            for start in range(0, len(batch), UPSERT_BATCH):
                await self._vector_call(
                    name,
                    "UpsertVectors",
                    vector_pb2.UpsertVectorsRequest(
                        index_name=naming.index_name(name), vectors=batch[start : start + UPSERT_BATCH]
                    ),
                )
            await store
        finally:
            if not store.done():
                store.cancel()
                with contextlib.suppress(BaseException):
                    await store
        return chunks

    async def _vector_call(self, collection: str, method: str, request: Any) -> Any:
        return await call_index(self.deps, collection, method, request)

    async def _store_bytes(self, collection: str, document_id: str, generation: int, data: bytes, kind: str) -> None:
        async def messages() -> AsyncIterator[blob_pb2.PutObjectRequest]:
            yield blob_pb2.PutObjectRequest(
                header=blob_pb2.PutObjectHeader(
                    bucket=self.deps.settings.bucket,
                    key=naming.blob_key(collection, document_id, generation),
                    content_type=kind,
                    metadata={"document-id-sha256": naming.document_key(document_id)},
                    content_length=len(data),
                )
            )
            for start in range(0, len(data), BLOB_CHUNK):
                yield blob_pb2.PutObjectRequest(chunk=data[start : start + BLOB_CHUNK])

        await self.deps.upstreams.blob.call("PutObject", messages())

    async def _abandon(self, collection: str, document_id: str, generation: int, reason: str) -> None:
        """Best effort after a failed attempt: FAILED with the reason, and the attempt's writes removed."""
        try:
            await self.deps.catalog.fail_ingest(collection, document_id, reason)
            await self._delete_generation(collection, document_id, generation)
            await self.deps.catalog.generation_cleaned(collection, document_id, generation)
        except (StrataError, asyncio.CancelledError) as exc:
            # pending_generation stays set; the janitor (recover) finishes the cleanup when the layer is back.
            log.warning("could not clean up a failed ingest", extra={"document": document_id, "error": str(exc)})

    async def _delete_generation(self, collection: str, document_id: str, generation: int) -> None:
        await self._vector_call(
            collection,
            "DeleteVectors",
            vector_pb2.DeleteVectorsRequest(
                index_name=naming.index_name(collection),
                filter=to_struct({naming.DOC_KEY: naming.document_key(document_id), naming.GENERATION_KEY: generation}),
            ),
        )
        await self.deps.upstreams.blob.call(
            "DeleteObject",
            blob_pb2.DeleteObjectRequest(
                bucket=self.deps.settings.bucket, key=naming.blob_key(collection, document_id, generation)
            ),
        )

    async def _drop_other_generations(
        self, collection: str, document_id: str, keep: int, *, strict: bool = False
    ) -> None:
        """Old versions are already invisible; removing their vectors and bytes is housekeeping.

        A failure leaves `stale_generations` set for the janitor (`strict` re-raises it).
        """
        try:
            await self._vector_call(
                collection,
                "DeleteVectors",
                vector_pb2.DeleteVectorsRequest(
                    index_name=naming.index_name(collection),
                    filter=to_struct(
                        {naming.DOC_KEY: naming.document_key(document_id), naming.GENERATION_KEY: {"$ne": keep}}
                    ),
                ),
            )
            prefix = f"{collection}/{naming.document_key(document_id)}/"
            page = await self.deps.upstreams.blob.call(
                "ListObjects", blob_pb2.ListObjectsRequest(bucket=self.deps.settings.bucket, prefix=prefix)
            )
            for obj in page.objects:
                if obj.key != naming.blob_key(collection, document_id, keep):
                    await self.deps.upstreams.blob.call(
                        "DeleteObject", blob_pb2.DeleteObjectRequest(bucket=self.deps.settings.bucket, key=obj.key)
                    )
            await self.deps.catalog.stale_generations_dropped(collection, document_id, keep)
        except StrataError as exc:
            if strict:
                raise
            log.warning("could not drop old generations", extra={"document": document_id, "error": str(exc)})

    # -- reads and deletes -----------------------------------------------------------------------

    async def get(self, collection: str, document_id: str) -> DocumentRecord:
        await self.collections.require(collection)
        record = await self.deps.catalog.get_document(collection, document_id)
        if record is None:
            raise document_not_found(collection, document_id)
        return record

    async def list(
        self, collection: str, page_size: int, page_token: str, status: str | None
    ) -> tuple[list[DocumentRecord], str]:
        if status is None:  # an enum value this server does not know
            raise InvalidArgument("status must be unset, PENDING, READY or FAILED", reason="BAD_STATUS")
        await self.collections.require(collection)
        limit = page_limit(page_size)
        after = after_key(page_token, "documents")
        records = await self.deps.catalog.list_documents(collection, after, limit + 1, STATUSES[status])
        return split_page(records, limit, lambda r: r.id, "documents")

    async def delete(self, collection: str, document_id: str) -> None:
        await self.collections.require(collection)
        catalog = self.deps.catalog
        if await catalog.get_document(collection, document_id) is None:
            raise document_not_found(collection, document_id)
        # Invisible to search first; if a layer fails below, the row remains and the delete can be retried.
        await catalog.hide_document(collection, document_id, "being deleted")
        await self._vector_call(
            collection,
            "DeleteVectors",
            vector_pb2.DeleteVectorsRequest(
                index_name=naming.index_name(collection),
                filter=to_struct({naming.DOC_KEY: naming.document_key(document_id)}),
            ),
        )
        prefix = f"{collection}/{naming.document_key(document_id)}/"
        await delete_blob_prefix(self.deps, prefix)
        await catalog.delete_document_rows(collection, document_id)

    # -- recovery ----------------------------------------------------------------------------------

    async def recover(self, *, interrupted: bool) -> int:
        """Clean up ingests that did not finish: their partial writes go and the document is FAILED (retryable).

        At start (`interrupted`), PENDING documents were cut off by a crash. Later passes only finish
        cleanups that a layer outage left undone, and leave in-flight ingests alone.
        """
        cleaned = 0
        for record in await self.deps.catalog.pending_documents():
            if not interrupted and (record.status == PENDING or (record.collection, record.id) in self._locks):
                continue  # an ingest in flight owns its pending generation
            generation = record.pending_generation
            try:
                if record.status == PENDING:
                    await self.deps.catalog.fail_ingest(
                        record.collection, record.id, "ingest was interrupted by a restart; put the document again"
                    )
                if generation:
                    if record.status == READY and not record.error:
                        # The failure itself could not be recorded (the metadata layer was down): say so
                        # first, so the document never looks settled while its reason is still missing.
                        await self.deps.catalog.fail_ingest(
                            record.collection, record.id, "an update was interrupted; put the document again"
                        )
                    await self._delete_generation(record.collection, record.id, generation)
                    await self.deps.catalog.generation_cleaned(record.collection, record.id, generation)
                if record.stale_generations and record.status == READY:
                    await self._drop_other_generations(record.collection, record.id, record.generation, strict=True)
                cleaned += 1
            except StrataError as exc:
                log.warning("recovery incomplete", extra={"document": record.id, "error": str(exc)})
        return cleaned
