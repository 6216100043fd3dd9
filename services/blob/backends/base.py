"""The interface every blob backend implements, and the records it returns.

Backends are synchronous and may block (disk, network): the core calls them from
worker threads. They receive names and keys the core has already validated, so
they only check what depends on their own state (does the bucket exist, do the
parts match). They raise `services.runtime.errors` types, translating their
library's exceptions in one place per module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class BucketInfo:
    name: str
    create_time: datetime


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    last_modified: datetime
    # Listings carry only key, size, ETag and time (as S3 does); heads and reads carry all.
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartInfo:
    part_number: int
    etag: str
    size: int
    last_modified: datetime


# Called by a backend with the current object (None if absent) at the instant it is
# about to replace or delete it, under the backend's per-key lock; raises to refuse.
Check = Callable[[ObjectInfo | None], None]


class ObjectReader(Protocol):
    """An open, consistent view of one object version: `info` and `read` describe the same bytes."""

    info: ObjectInfo

    def read(self, offset: int, length: int, chunk_bytes: int) -> Iterator[bytes]:
        """Yield the `length` bytes from `offset` in chunks of at most `chunk_bytes`."""
        ...

    def close(self) -> None: ...


class ObjectWriter(Protocol):
    """A new object (or part) being written; invisible to readers until `commit`."""

    def write(self, data: bytes) -> None: ...

    def commit(self, check: Check) -> ObjectInfo:
        """Publish the object whole, unless `check` raises; either way the writer is finished."""
        ...

    def abort(self) -> None:
        """Discard everything written; safe to call after commit (it then does nothing)."""
        ...


class PartWriter(Protocol):
    """One multipart part being written; replaces a part with the same number on `commit`."""

    def write(self, data: bytes) -> None: ...

    def commit(self) -> PartInfo: ...

    def abort(self) -> None: ...


class BlobBackend(Protocol):
    """Buckets of objects with S3 semantics: whole-object replacement, MD5 ETags, multipart uploads.

    Guarantees every backend gives: a committed object is durable before `commit`
    returns; a reader sees one whole version; `check` callbacks run atomically
    with the change they guard (at least within this process).
    """

    # Smallest size of every part but the last in a multipart upload (S3 requires 5 MiB).
    min_part_bytes: int

    def open(self) -> None:
        """Prepare storage (create folders, clean leftovers, reach the server)."""
        ...

    def close(self) -> None: ...

    def probe(self) -> bool:
        """True when the store answers."""
        ...

    def create_bucket(self, name: str) -> BucketInfo:
        """Raises AlreadyExists."""
        ...

    def list_buckets(self) -> list[BucketInfo]:
        """Every bucket, sorted by name."""
        ...

    def delete_bucket(self, name: str) -> None:
        """Raises NotFound, or FailedPrecondition while it holds objects or uploads."""
        ...

    def require_bucket(self, name: str) -> None:
        """Raises NotFound unless the bucket exists."""
        ...

    def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        """The object's full info, None if absent; raises NotFound for an unknown bucket."""
        ...

    def open_object(self, bucket: str, key: str) -> ObjectReader | None:
        """A reader of the current version, None if absent; raises NotFound for an unknown bucket."""
        ...

    def new_object(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> ObjectWriter:
        """Start writing a new version; raises NotFound for an unknown bucket."""
        ...

    def delete_object(self, bucket: str, key: str, check: Check) -> None:
        """Delete if present (after `check`); absent is fine."""
        ...

    def iter_objects(self, bucket: str, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix` and sorts after `start_after` (UTF-8 byte order)."""
        ...

    def copy_object(
        self,
        source: ObjectReader,
        bucket: str,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        check: Check,
    ) -> ObjectInfo:
        """Write the version `source` reads to `bucket`/`key` with this content type and metadata."""
        ...

    def create_upload(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> str:
        """Start a multipart upload; return its id."""
        ...

    def new_part(self, bucket: str, key: str, upload_id: str, part_number: int) -> PartWriter:
        """Raises NotFound for an unknown upload."""
        ...

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        """Uploaded parts by number; raises NotFound for an unknown upload."""
        ...

    def complete_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[PartInfo], etag: str, check: Check
    ) -> ObjectInfo:
        """Join `parts` (already verified by the core) into the object with this multipart ETag."""
        ...

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Raises NotFound for an unknown upload."""
        ...
