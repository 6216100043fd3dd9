"""The blob service's logic, independent of gRPC: validation, preconditions, ranges, paging, streaming.

Backends block, so every call into one runs in a worker thread; content moves in
bounded chunks in both directions so an object of any size costs O(chunk) memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from services.blob import names, paging
from services.blob.backends.base import (
    BlobBackend,
    BucketInfo,
    ObjectInfo,
    ObjectReader,
    ObjectWriter,
    PartInfo,
    PartWriter,
)
from services.blob.conditions import Conditions, resolve_range
from services.runtime.errors import Aborted, InvalidArgument, NotFound

MAX_PART_NUMBER = 10_000
MAX_PART_BYTES = 5 * 1024**3

T = TypeVar("T")
W = TypeVar("W", ObjectWriter, PartWriter)
_DONE = object()


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(fn, *args)


@dataclass(frozen=True)
class ObjectPage:
    objects: list[ObjectInfo]
    common_prefixes: list[str]
    next_page_token: str


async def _run_owned(fn: Callable[[], T], release: Callable[[T], object]) -> T:
    """Like `_run`, but if the caller is cancelled meanwhile, `release` what the thread still returns."""
    future = asyncio.ensure_future(_run(fn))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:

        def orphaned(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                release(done.result())

        future.add_done_callback(orphaned)
        raise


@dataclass
class Download:
    """An open read. `close()` releases the object however the stream ends; it is idempotent.

    A gRPC stream cancelled while suspended between chunks never resumes its
    generators, so the servicer also calls `close()` when the RPC terminates.
    """

    info: ObjectInfo
    offset: int
    length: int
    chunks: AsyncGenerator[bytes, None]
    reader: ObjectReader | None = None
    _closing: asyncio.Future[None] | None = None

    def close(self) -> asyncio.Future[None]:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        return self._closing

    async def _close(self) -> None:
        await self.chunks.aclose()  # waits for a read in flight before the reader closes
        if self.reader is not None:
            await _run(self.reader.close)

    async def __aenter__(self) -> Download:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.close())


class _Buffer:
    """Collects small incoming chunks so the backend sees few, large writes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> bytes | None:
        self.parts.append(data)
        self.size += len(data)
        return self.take() if self.size >= self.limit else None

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts, self.size = [], 0
        return data


def _object_name(bucket: str, key: str) -> str:
    return f"object {key!r} in bucket {bucket!r}"


class BlobStore:
    def __init__(self, backend: BlobBackend, chunk_bytes: int) -> None:
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    async def open(self) -> None:
        await _run(self.backend.open)

    async def close(self) -> None:
        await _run(self.backend.close)

    async def probe(self) -> bool:
        return await _run(self.backend.probe)

    # buckets

    async def create_bucket(self, name: str) -> BucketInfo:
        return await _run(self.backend.create_bucket, names.bucket_name(name))

    async def list_buckets(self, page_size: int, page_token: str) -> tuple[list[BucketInfo], str]:
        size = paging.page_size(page_size)
        after, _ = paging.decode("buckets", page_token)
        buckets = [b for b in await _run(self.backend.list_buckets) if b.name > after]
        page = buckets[:size]
        token = paging.encode("buckets", page[-1].name) if len(buckets) > size else ""
        return page, token

    async def delete_bucket(self, name: str) -> None:
        await _run(self.backend.delete_bucket, names.bucket_name(name))

    # objects

    async def put_object(
        self,
        bucket: str,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        conditions: Conditions,
        chunks: AsyncIterator[bytes],
        abandoned: threading.Event | None = None,
    ) -> ObjectInfo:
        """Write an object from `chunks`; `abandoned` is set if the client gives up (see `_settled`)."""
        names.bucket_name(bucket)
        names.object_key(key)
        content_type = names.content_type(content_type)
        metadata = names.metadata(metadata)
        what = _object_name(bucket, key)
        if conditions.if_match or conditions.if_none_match:
            # Fail before the upload when we already can; the commit checks again atomically.
            conditions.check(await _run(self.backend.head_object, bucket, key), what)

        def new() -> ObjectWriter:
            return self.backend.new_object(bucket, key, content_type, metadata)

        writer, tail = await self._pump(chunks, new)
        async with _settled(abandoned) as confirm:

            def check(current: ObjectInfo | None) -> None:
                confirm()
                conditions.check(current, what)

            def finish() -> ObjectInfo:
                # Small objects never left memory: open, write and commit in one trip to a worker thread.
                final = writer or new()
                try:
                    if tail:
                        final.write(tail)
                except BaseException:
                    final.abort()
                    raise
                return final.commit(check)

            return await _run(finish)

    async def _pump(
        self, chunks: AsyncIterator[bytes], open_writer: Callable[[], W], limit: int = 0
    ) -> tuple[W | None, bytes]:
        """Stream `chunks` into a writer opened at the first full buffer; return it and the unwritten tail.

        One write runs in a worker thread while the next chunk arrives, so disk and
        network overlap; at most two buffers are held at a time.
        """
        buffer = _Buffer(self.chunk_bytes)
        total = 0
        writer: W | None = None
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in chunks:
                total += len(chunk)
                if limit and total > limit:
                    raise InvalidArgument(f"a part may hold at most {limit} bytes", reason="PART_TOO_LARGE")
                full = buffer.add(chunk)
                if full is None:
                    continue
                if writer is None:
                    writer = await _run(open_writer)
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(_run(writer.write, full))
            if pending is not None:
                await pending
            return writer, buffer.take()
        except BaseException:
            if pending is not None:
                await asyncio.wait([pending])
                if not pending.cancelled():
                    pending.exception()  # retrieved, so it is not logged as unhandled
            if writer is not None:
                await _run(writer.abort)
            raise

    async def get_object(
        self, bucket: str, key: str, conditions: Conditions, byte_range: tuple[int, int, int] | None
    ) -> Download:
        names.bucket_name(bucket)
        names.object_key(key)

        def open_read() -> tuple[ObjectInfo, int, int, bytes, ObjectReader | None]:
            reader = self._open_sync(bucket, key)
            try:
                conditions.check(reader.info, _object_name(bucket, key))
                size = reader.info.size
                offset, length = (0, size) if byte_range is None else resolve_range(size, *byte_range)
                if length > self.chunk_bytes:
                    return reader.info, offset, length, b"", reader
                # Small reads finish in this one trip to a worker thread.
                data = b"".join(reader.read(offset, length, self.chunk_bytes))
            except BaseException:
                reader.close()
                raise
            reader.close()
            return reader.info, offset, length, data, None

        def release(opened: tuple[ObjectInfo, int, int, bytes, ObjectReader | None]) -> None:
            if opened[4] is not None:
                opened[4].close()

        info, offset, length, data, reader = await _run_owned(open_read, release)
        if reader is None:
            return Download(info, offset, length, _once(data))
        return Download(info, offset, length, self._stream(reader, offset, length), reader)

    def _open_sync(self, bucket: str, key: str) -> ObjectReader:
        reader = self.backend.open_object(bucket, key)
        if reader is None:
            raise NotFound(
                f"{_object_name(bucket, key)} does not exist",
                reason="OBJECT_NOT_FOUND",
                metadata={"bucket": bucket, "key": key},
            )
        return reader

    async def _stream(self, reader: ObjectReader, offset: int, length: int) -> AsyncGenerator[bytes, None]:
        """Yield chunks, reading the next one in a worker thread while this one is sent."""
        chunks: Iterator[bytes] = reader.read(offset, length, self.chunk_bytes)
        upcoming = asyncio.ensure_future(_run(next, chunks, _DONE))
        try:
            while True:
                chunk = await upcoming
                if chunk is _DONE:
                    return
                upcoming = asyncio.ensure_future(_run(next, chunks, _DONE))
                yield chunk  # type: ignore[misc]
        finally:
            await asyncio.wait([upcoming])
            if not upcoming.cancelled():
                upcoming.exception()
            await _run(reader.close)

    async def _open(self, bucket: str, key: str) -> ObjectReader:
        names.bucket_name(bucket)
        names.object_key(key)
        return await _run_owned(lambda: self._open_sync(bucket, key), lambda reader: reader.close())

    async def head_object(self, bucket: str, key: str, conditions: Conditions) -> ObjectInfo:
        names.bucket_name(bucket)
        names.object_key(key)
        info = await _run(self.backend.head_object, bucket, key)
        if info is None:
            raise NotFound(
                f"{_object_name(bucket, key)} does not exist",
                reason="OBJECT_NOT_FOUND",
                metadata={"bucket": bucket, "key": key},
            )
        conditions.check(info, _object_name(bucket, key))
        return info

    async def delete_object(self, bucket: str, key: str, if_match: str) -> None:
        names.bucket_name(bucket)
        names.object_key(key)
        conditions = Conditions(if_match=if_match)
        what = _object_name(bucket, key)
        await _run(self.backend.delete_object, bucket, key, lambda current: conditions.check(current, what))

    async def list_objects(
        self, bucket: str, prefix: str, delimiter: str, start_after: str, page_size: int, page_token: str
    ) -> ObjectPage:
        names.bucket_name(bucket)
        size = paging.page_size(page_size)
        after, skip = paging.decode("objects", page_token)
        if start_after > after:
            after, skip = start_after, ""
        return await _run(self._list_page, bucket, prefix, delimiter, after, skip, size)

    def _list_page(self, bucket: str, prefix: str, delimiter: str, after: str, skip: str, size: int) -> ObjectPage:
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last = ""
        for info in self.backend.iter_objects(bucket, prefix, after):
            if skip and info.key.startswith(skip):
                continue
            common = ""
            if delimiter:
                cut = info.key.find(delimiter, len(prefix))
                if cut >= 0:
                    common = info.key[: cut + len(delimiter)]
            if len(objects) + len(prefixes) == size:
                # One more entry exists: this page is full and there is a next one.
                token = paging.encode("objects", last, last if prefixes and prefixes[-1] == last else "")
                return ObjectPage(objects, prefixes, token)
            if common:
                prefixes.append(common)
                skip = last = common
            else:
                objects.append(info)
                last = info.key
        return ObjectPage(objects, prefixes, "")

    async def copy_object(
        self,
        source_bucket: str,
        source_key: str,
        bucket: str,
        key: str,
        replace_metadata: bool | None,
        content_type: str,
        metadata: Mapping[str, str],
        source_conditions: Conditions,
        conditions: Conditions,
    ) -> ObjectInfo:
        names.bucket_name(bucket)
        names.object_key(key, "destination key")
        if replace_metadata is None:
            raise InvalidArgument("metadata_directive must be unset, COPY or REPLACE", reason="INVALID_DIRECTIVE")
        if replace_metadata:
            content_type = names.content_type(content_type)
            metadata = names.metadata(metadata)
        reader = await self._open(source_bucket, source_key)
        try:
            source_conditions.check(reader.info, _object_name(source_bucket, source_key))
            if not replace_metadata:
                content_type, metadata = reader.info.content_type, reader.info.metadata
            what = _object_name(bucket, key)
            return await _run(
                self.backend.copy_object,
                reader,
                bucket,
                key,
                content_type,
                metadata,
                lambda current: conditions.check(current, what),
            )
        finally:
            await _run(reader.close)

    # multipart uploads

    async def create_upload(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> str:
        names.bucket_name(bucket)
        names.object_key(key)
        return await _run(
            self.backend.create_upload, bucket, key, names.content_type(content_type), names.metadata(metadata)
        )

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        part_number: int,
        chunks: AsyncIterator[bytes],
        abandoned: threading.Event | None = None,
    ) -> PartInfo:
        names.bucket_name(bucket)
        names.object_key(key)
        _upload_id(upload_id)
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise InvalidArgument(
                f"part number {part_number} is outside 1..{MAX_PART_NUMBER}",
                reason="INVALID_PART_NUMBER",
                metadata={"part_number": str(part_number)},
            )
        writer, tail = await self._pump(
            chunks, lambda: self.backend.new_part(bucket, key, upload_id, part_number), MAX_PART_BYTES
        )

        async with _settled(abandoned) as confirm:

            def finish() -> PartInfo:
                final = writer or self.backend.new_part(bucket, key, upload_id, part_number)
                try:
                    if tail:
                        final.write(tail)
                    confirm()
                except BaseException:
                    final.abort()
                    raise
                return final.commit()

            return await _run(finish)

    async def list_parts(
        self, bucket: str, key: str, upload_id: str, page_size: int, page_token: str
    ) -> tuple[list[PartInfo], str]:
        names.bucket_name(bucket)
        names.object_key(key)
        _upload_id(upload_id)
        size = paging.page_size(page_size)
        after, _ = paging.decode("parts", page_token)
        try:
            after_number = int(after or 0)
        except ValueError:
            raise InvalidArgument(
                "page_token is not a token this listing returned", reason="INVALID_PAGE_TOKEN"
            ) from None
        parts = [p for p in await _run(self.backend.list_parts, bucket, key, upload_id) if p.part_number > after_number]
        page = parts[:size]
        token = paging.encode("parts", str(page[-1].part_number)) if len(parts) > size else ""
        return page, token

    async def complete_upload(
        self, bucket: str, key: str, upload_id: str, wanted: Sequence[tuple[int, str]], conditions: Conditions
    ) -> ObjectInfo:
        names.bucket_name(bucket)
        names.object_key(key)
        _upload_id(upload_id)
        if not wanted:
            raise InvalidArgument("the part list is empty; name at least one part", reason="NO_PARTS")
        numbers = [number for number, _ in wanted]
        if any(b <= a for a, b in itertools.pairwise(numbers)):
            raise InvalidArgument(
                f"parts must be listed in strictly ascending order of part number; got {numbers[:20]}",
                reason="PARTS_NOT_ASCENDING",
            )
        uploaded = {p.part_number: p for p in await _run(self.backend.list_parts, bucket, key, upload_id)}
        chosen: list[PartInfo] = []
        for index, (number, etag) in enumerate(wanted):
            part = uploaded.get(number)
            if part is None:
                raise InvalidArgument(
                    f"part {number} was never uploaded to upload {upload_id!r}",
                    reason="PART_MISSING",
                    metadata={"part_number": str(number)},
                )
            if names.etag(etag) != part.etag:
                raise InvalidArgument(
                    f"part {number} has ETag {part.etag!r}, not {names.etag(etag)!r}",
                    reason="PART_ETAG_MISMATCH",
                    metadata={"part_number": str(number)},
                )
            if index < len(wanted) - 1 and part.size < self.backend.min_part_bytes:
                raise InvalidArgument(
                    f"part {number} has {part.size} bytes; every part but the last needs at least "
                    f"{self.backend.min_part_bytes} bytes on this backend",
                    reason="PART_TOO_SMALL",
                    metadata={"part_number": str(number)},
                )
            chosen.append(part)
        etag = multipart_etag([p.etag for p in chosen])
        what = _object_name(bucket, key)
        conditions.check(await _run(self.backend.head_object, bucket, key), what)
        return await _run(
            self.backend.complete_upload,
            bucket,
            key,
            upload_id,
            chosen,
            etag,
            lambda current: conditions.check(current, what),
        )

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        names.bucket_name(bucket)
        names.object_key(key)
        _upload_id(upload_id)
        await _run(self.backend.abort_upload, bucket, key, upload_id)


async def _once(data: bytes) -> AsyncGenerator[bytes, None]:
    if data:
        yield data


# gRPC can end a client stream that the client cancelled as if it had finished, and deliver
# the cancellation a moment later (measured here: in about a quarter of cancels, usually within
# 0.4 ms, but later when the CPU is oversubscribed). The contract has no explicit end-of-upload
# marker, so a stream's end counts only after the event loop has run this long without hearing
# of a cancellation.
CANCEL_GRACE_SECONDS = 0.005


@contextlib.asynccontextmanager
async def _settled(abandoned: threading.Event | None) -> AsyncIterator[Callable[[], None]]:
    """Yield `confirm` for a worker thread: it blocks until the grace period has passed on the event loop
    (not just on the clock, so a starved loop cannot be outrun), then raises Aborted if the client left."""
    if abandoned is None:
        yield lambda: None
        return
    settled = threading.Event()

    async def settle() -> None:
        try:
            await asyncio.sleep(CANCEL_GRACE_SECONDS)
        finally:
            settled.set()

    timer = asyncio.ensure_future(settle())

    def confirm() -> None:
        settled.wait()
        if abandoned.is_set():
            raise Aborted("the client cancelled the upload; nothing was written", reason="CANCELLED")

    try:
        yield confirm
    except asyncio.CancelledError:
        abandoned.set()  # before the timer releases the worker thread
        raise
    finally:
        timer.cancel()


def multipart_etag(part_etags: Sequence[str]) -> str:
    """S3's multipart ETag: MD5 of the concatenated binary part MD5s, then '-' and the part count."""
    digest = hashlib.md5(b"".join(bytes.fromhex(e) for e in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


def _upload_id(upload_id: str) -> str:
    # Backends mint ids; anything empty or absurd cannot be one of them.
    if not upload_id or len(upload_id) > 1024:
        raise NotFound(f"no multipart upload {upload_id[:80]!r}", reason="UPLOAD_NOT_FOUND")
    return upload_id


async def exactly(chunks: AsyncIterator[bytes], expected: int | None) -> AsyncIterator[bytes]:
    """`chunks`, failing unless they add up to `expected` bytes (when the client declared a length).

    Raising before the stream's end stops the write, so a stream cut short — or one that grpcio
    reports as ended when the client in fact cancelled it — never becomes an object.
    """
    if expected is None:
        async for chunk in chunks:
            yield chunk
        return
    if expected < 0:
        raise InvalidArgument(f"content_length {expected} is negative", reason="BAD_CONTENT_LENGTH")
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > expected:
            raise InvalidArgument(
                f"received more than the declared content_length of {expected} bytes", reason="LENGTH_MISMATCH"
            )
        yield chunk
    if received != expected:
        raise InvalidArgument(
            f"stream ended after {received} bytes; the header declared content_length {expected}",
            reason="LENGTH_MISMATCH",
        )
