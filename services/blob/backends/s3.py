"""Objects in any S3-compatible store (AWS S3, Cloudflare R2, SeaweedFS, MinIO) through boto3.

- Each Strata bucket is the S3 bucket `<STRATA_BLOB_S3_BUCKET_PREFIX><name>`.
- PutObject streams up to STRATA_BLOB_S3_PART_BYTES into one PUT (ETag = MD5 of the
  content); a longer stream becomes an S3 multipart upload of parts that size, so memory
  stays bounded (the ETag then has S3's `md5-of-md5s-N` form, as with `aws s3 cp`).
- UploadPart spools its part to a temporary file (memory up to the part size, disk
  beyond) because S3 needs each part's length before the first byte.
- A reader pins the version it described: ranged GETs carry If-Match with that ETag,
  so a concurrent replace fails the read (ABORTED) instead of mixing versions.
- Metadata values are percent-encoded into x-amz-meta-* headers so any UTF-8 survives.
- Preconditions are checked under a per-key lock in this process just before the
  write; with several Strata blob replicas on one bucket they are best-effort.
"""

from __future__ import annotations

import contextlib
import heapq
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from services.blob.backends.base import BucketInfo, Check, ObjectInfo, PartInfo
from services.blob.config import BlobSettings
from services.runtime.errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfRange,
    Unavailable,
)

_LOCK_STRIPES = 1024
_MAX_COPY_BYTES = 5 * 1024**3
_MAX_PARTS = 10_000
_RECENT_PARTS = 10_000
# Everything printable but '%' passes through metadata headers unchanged.
_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def _etag(raw: str) -> str:
    return raw.strip('"')


def _encode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k: quote(v, safe=_SAFE) for k, v in metadata.items()}


def _decode_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): unquote(v) for k, v in sorted(metadata.items())}


@contextlib.contextmanager
def _s3_errors(what: str, **names: str) -> Iterator[None]:
    """Translate botocore failures into domain errors, in one place."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        message = error.get("Message") or code
        meta = {k: v for k, v in names.items() if v}
        if code == "NoSuchBucket":
            raise NotFound(
                f"bucket {names.get('bucket')!r} does not exist", reason="BUCKET_NOT_FOUND", metadata=meta
            ) from exc
        if code == "NoSuchUpload":
            raise NotFound(
                f"no multipart upload {names.get('upload_id')!r} for key {names.get('key')!r}",
                reason="UPLOAD_NOT_FOUND",
                metadata=meta,
            ) from exc
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            raise NotFound(f"{what}: not found", reason="NOT_FOUND", metadata=meta) from exc
        if code in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            raise AlreadyExists(
                f"bucket {names.get('bucket')!r} already exists", reason="BUCKET_EXISTS", metadata=meta
            ) from exc
        if code == "BucketNotEmpty":
            raise FailedPrecondition(
                f"bucket {names.get('bucket')!r} still holds objects; delete them first",
                reason="BUCKET_NOT_EMPTY",
                metadata=meta,
            ) from exc
        if code in ("PreconditionFailed", "412") or status == 412:
            raise Aborted(
                f"{what}: the object changed meanwhile; retry", reason="CONCURRENT_CHANGE", metadata=meta
            ) from exc
        if code in ("InvalidRange",) or status == 416:
            raise OutOfRange(f"{what}: {message}", reason="RANGE_NOT_SATISFIABLE", metadata=meta) from exc
        if (
            code
            in (
                "InvalidPart",
                "InvalidPartOrder",
                "EntityTooSmall",
                "EntityTooLarge",
                "InvalidBucketName",
                "KeyTooLongError",
                "MetadataTooLarge",
                "InvalidArgument",
                "InvalidRequest",
            )
            or status == 400
        ):
            # The store judged the request malformed: with validated input, that is a key or name it cannot hold.
            raise InvalidArgument(
                f"{what}: the S3 store refused it: {message}", reason="S3_REFUSED", metadata={**meta, "s3_code": code}
            ) from exc
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
            raise Unavailable(
                f"{what}: the S3 store denied access ({code}); check the blob service's credentials",
                reason="S3_ACCESS_DENIED",
            ) from exc
        if status in (500, 502, 503, 504) or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            raise Unavailable(f"{what}: the S3 store is unavailable ({code})", reason="S3_UNAVAILABLE") from exc
        raise
    except BotoCoreError as exc:
        raise Unavailable(f"{what}: cannot reach the S3 store: {exc}", reason="S3_UNREACHABLE") from exc


class S3ObjectReader:
    def __init__(self, backend: S3Backend, s3_bucket: str, info: ObjectInfo, native_etag: str) -> None:
        self._backend, self._s3_bucket = backend, s3_bucket
        self.info = info
        self.native_etag = native_etag
        self._body: Any = None

    @property
    def s3_bucket(self) -> str:
        return self._s3_bucket

    def read(self, offset: int, length: int, chunk_bytes: int) -> Iterator[bytes]:
        if length == 0:
            return
        what = f"reading object {self.info.key!r}"
        with _s3_errors(what, bucket=self.info.bucket, key=self.info.key):
            response = self._backend.client.get_object(
                Bucket=self._s3_bucket,
                Key=self.info.key,
                Range=f"bytes={offset}-{offset + length - 1}",
                IfMatch=f'"{self.native_etag}"',
            )
            self._body = response["Body"]
            yield from self._body.iter_chunks(chunk_bytes)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


class S3ObjectWriter:
    """Buffers one part; past it, switches to a multipart upload so memory stays at one part."""

    def __init__(self, backend: S3Backend, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]):
        self._backend, self._bucket, self._key = backend, bucket, key
        self._content_type, self._metadata = content_type, dict(metadata)
        self._buffer = bytearray()
        self._upload_id = ""
        self._parts: list[dict[str, Any]] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        self._size += len(data)
        part_bytes = self._backend.part_bytes
        # Strictly more than a part before sending one, so the final part is never empty.
        while len(self._buffer) > part_bytes:
            self._send_part(bytes(self._buffer[:part_bytes]))
            del self._buffer[:part_bytes]

    def _send_part(self, data: bytes) -> None:
        client, s3_bucket = self._backend.client, self._backend.s3_name(self._bucket)
        with _s3_errors(f"writing object {self._key!r}", bucket=self._bucket, key=self._key):
            if not self._upload_id:
                self._upload_id = client.create_multipart_upload(
                    Bucket=s3_bucket,
                    Key=self._key,
                    ContentType=self._content_type,
                    Metadata=_encode_metadata(self._metadata),
                )["UploadId"]
            number = len(self._parts) + 1
            if number > _MAX_PARTS:
                raise InvalidArgument(
                    f"object is larger than {_MAX_PARTS} parts of {self._backend.part_bytes} bytes; "
                    "raise STRATA_BLOB_S3_PART_BYTES",
                    reason="OBJECT_TOO_LARGE",
                )
            response = client.upload_part(
                Bucket=s3_bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=data
            )
            self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def commit(self, check: Check) -> ObjectInfo:
        backend = self._backend
        client, s3_bucket = backend.client, backend.s3_name(self._bucket)
        try:
            with (
                backend.key_lock(self._bucket, self._key),
                _s3_errors(f"writing object {self._key!r}", bucket=self._bucket, key=self._key),
            ):
                check(backend.head_object(self._bucket, self._key))
                if self._upload_id:
                    if self._buffer:
                        self._send_part(bytes(self._buffer))
                    response = client.complete_multipart_upload(
                        Bucket=s3_bucket,
                        Key=self._key,
                        UploadId=self._upload_id,
                        MultipartUpload={"Parts": self._parts},
                    )
                    self._upload_id = ""
                else:
                    response = client.put_object(
                        Bucket=s3_bucket,
                        Key=self._key,
                        Body=bytes(self._buffer),
                        ContentType=self._content_type,
                        Metadata=_encode_metadata(self._metadata),
                    )
            return ObjectInfo(
                self._bucket,
                self._key,
                self._size,
                _etag(response["ETag"]),
                datetime.now(UTC),
                self._content_type,
                self._metadata,
            )
        finally:
            self.abort()

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id:
            upload_id, self._upload_id = self._upload_id, ""
            with contextlib.suppress(ClientError, BotoCoreError):
                self._backend.client.abort_multipart_upload(
                    Bucket=self._backend.s3_name(self._bucket), Key=self._key, UploadId=upload_id
                )


class S3PartWriter:
    def __init__(self, backend: S3Backend, bucket: str, key: str, upload_id: str, part_number: int) -> None:
        self._backend, self._bucket, self._key = backend, bucket, key
        self._upload_id, self._number = upload_id, part_number
        self._spool = tempfile.SpooledTemporaryFile(max_size=backend.part_bytes)
        self._size = 0

    def write(self, data: bytes) -> None:
        self._spool.write(data)
        self._size += len(data)

    def commit(self) -> PartInfo:
        try:
            self._spool.seek(0)
            with _s3_errors(
                f"uploading part {self._number}", bucket=self._bucket, key=self._key, upload_id=self._upload_id
            ):
                response = self._backend.client.upload_part(
                    Bucket=self._backend.s3_name(self._bucket),
                    Key=self._key,
                    UploadId=self._upload_id,
                    PartNumber=self._number,
                    Body=self._spool,
                    ContentLength=self._size,
                )
            part = PartInfo(self._number, _etag(response["ETag"]), self._size, datetime.now(UTC))
            self._backend.remember_part(self._bucket, self._key, self._upload_id, part)
            return part
        finally:
            self.abort()

    def abort(self) -> None:
        self._spool.close()


class S3Backend:
    """See the module docstring."""

    min_part_bytes = 5 * 1024 * 1024

    def __init__(self, settings: BlobSettings) -> None:
        self.settings = settings
        self.part_bytes = settings.s3_part_bytes
        self.prefix = settings.s3_bucket_prefix
        self._client: Any = None
        self._key_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._recent_parts: OrderedDict[tuple[str, str, str, int], str] = OrderedDict()
        self._recent_lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise Unavailable("the S3 backend is not open", reason="STARTING")
        return self._client

    def open(self) -> None:
        s = self.settings
        credentials = {}
        if s.s3_access_key_id:
            credentials = {"aws_access_key_id": s.s3_access_key_id, "aws_secret_access_key": s.s3_secret_access_key}
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=s.s3_endpoint or None,
            region_name=s.s3_region,
            config=Config(
                max_pool_connections=32,
                retries={"mode": "standard", "max_attempts": 3},
                # Path-style works with every S3-compatible server on a plain host:port.
                s3={"addressing_style": "path"} if s.s3_endpoint else {},
                connect_timeout=5,
                read_timeout=60,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
            **credentials,
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def probe(self) -> bool:
        with _s3_errors("probing the S3 store"):
            self.client.list_buckets()
        return True

    def s3_name(self, bucket: str) -> str:
        name = self.prefix + bucket
        if len(name) > 63:
            raise InvalidArgument(
                f"bucket name {bucket!r} is too long with the S3 bucket prefix {self.prefix!r} (63 characters at most)",
                reason="INVALID_BUCKET_NAME",
            )
        return name

    def key_lock(self, bucket: str, key: str) -> threading.Lock:
        return self._key_locks[zlib.crc32(f"{bucket}\x00{key}".encode()) % _LOCK_STRIPES]

    # buckets

    def create_bucket(self, name: str) -> BucketInfo:
        extra: dict[str, Any] = {}
        if self.settings.s3_region not in ("", "us-east-1"):
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.s3_region}
        with _s3_errors(f"creating bucket {name!r}", bucket=name):
            try:
                self.client.head_bucket(Bucket=self.s3_name(name))
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
            else:
                raise AlreadyExists(
                    f"bucket {name!r} already exists", reason="BUCKET_EXISTS", metadata={"bucket": name}
                )
            self.client.create_bucket(Bucket=self.s3_name(name), **extra)
        return BucketInfo(name, datetime.now(UTC))

    def list_buckets(self) -> list[BucketInfo]:
        with _s3_errors("listing buckets"):
            response = self.client.list_buckets()
        found = [
            BucketInfo(b["Name"][len(self.prefix) :], b["CreationDate"])
            for b in response.get("Buckets", [])
            if b["Name"].startswith(self.prefix) and len(b["Name"]) > len(self.prefix)
        ]
        return sorted(found, key=lambda b: b.name)

    def delete_bucket(self, name: str) -> None:
        s3_bucket = self.s3_name(name)
        with _s3_errors(f"deleting bucket {name!r}", bucket=name):
            # Some S3-compatible servers delete non-empty buckets; refuse first, as S3 does.
            if self.client.list_objects_v2(Bucket=s3_bucket, MaxKeys=1).get("KeyCount", 0):
                raise FailedPrecondition(
                    f"bucket {name!r} still holds objects; delete them first",
                    reason="BUCKET_NOT_EMPTY",
                    metadata={"bucket": name},
                )
            if self.client.list_multipart_uploads(Bucket=s3_bucket, MaxUploads=1).get("Uploads"):
                raise FailedPrecondition(
                    f"bucket {name!r} still holds multipart uploads; complete or abort them first",
                    reason="BUCKET_NOT_EMPTY",
                    metadata={"bucket": name},
                )
            self.client.delete_bucket(Bucket=s3_bucket)

    def require_bucket(self, name: str) -> None:
        with _s3_errors(f"bucket {name!r}", bucket=name):
            try:
                self.client.head_bucket(Bucket=self.s3_name(name))
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    raise NotFound(
                        f"bucket {name!r} does not exist", reason="BUCKET_NOT_FOUND", metadata={"bucket": name}
                    ) from exc
                raise

    # objects

    def _head(self, bucket: str, key: str) -> tuple[ObjectInfo, str] | None:
        with _s3_errors(f"object {key!r}", bucket=bucket, key=key):
            try:
                response = self.client.head_object(Bucket=self.s3_name(bucket), Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
                self.require_bucket(bucket)
                return None
        native = _etag(response["ETag"])
        info = ObjectInfo(
            bucket,
            key,
            response["ContentLength"],
            native,
            response["LastModified"],
            response.get("ContentType") or "application/octet-stream",
            _decode_metadata(response.get("Metadata", {})),
        )
        return info, native

    def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        found = self._head(bucket, key)
        return None if found is None else found[0]

    def open_object(self, bucket: str, key: str) -> S3ObjectReader | None:
        found = self._head(bucket, key)
        if found is None:
            return None
        return S3ObjectReader(self, self.s3_name(bucket), *found)

    def new_object(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> S3ObjectWriter:
        self.require_bucket(bucket)
        return S3ObjectWriter(self, bucket, key, content_type, metadata)

    def delete_object(self, bucket: str, key: str, check: Check) -> None:
        with self.key_lock(bucket, key):
            current = self.head_object(bucket, key)
            check(current)
            if current is not None:
                with _s3_errors(f"deleting object {key!r}", bucket=bucket, key=key):
                    self.client.delete_object(Bucket=self.s3_name(bucket), Key=key)

    def iter_objects(self, bucket: str, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        if not start_after:
            yield from self._list(bucket, prefix, "")
            return
        # SeaweedFS treats StartAfter "a" as a folder and skips "a/..." too; list those keys apart and merge.
        children = start_after + "/"
        if children.startswith(prefix) or prefix.startswith(children):
            below = self._list(bucket, max(children, prefix, key=len), "")
            after = self._list(bucket, prefix, start_after)
            last = ""
            for info in heapq.merge(below, after, key=lambda i: i.key.encode()):
                if info.key != last:
                    last = info.key
                    yield info
        else:
            yield from self._list(bucket, prefix, start_after)

    def _list(self, bucket: str, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        request: dict[str, Any] = {"Bucket": self.s3_name(bucket), "Prefix": prefix}
        if start_after:
            request["StartAfter"] = start_after
        with _s3_errors(f"listing bucket {bucket!r}", bucket=bucket):
            for page in self.client.get_paginator("list_objects_v2").paginate(**request):
                for item in page.get("Contents", []):
                    yield ObjectInfo(bucket, item["Key"], item["Size"], _etag(item["ETag"]), item["LastModified"])

    def copy_object(
        self,
        source: Any,
        bucket: str,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        check: Check,
    ) -> ObjectInfo:
        if not isinstance(source, S3ObjectReader):
            raise TypeError("the S3 backend copies only its own objects")
        if source.info.size > _MAX_COPY_BYTES:
            raise InvalidArgument(
                f"object {source.info.key!r} is over 5 GiB; the S3 backend copies objects up to 5 GiB",
                reason="OBJECT_TOO_LARGE",
            )
        with self.key_lock(bucket, key):
            check(self.head_object(bucket, key))
            with _s3_errors(f"copying to object {key!r}", bucket=bucket, key=key):
                response = self.client.copy_object(
                    Bucket=self.s3_name(bucket),
                    Key=key,
                    CopySource={"Bucket": source.s3_bucket, "Key": source.info.key},
                    CopySourceIfMatch=f'"{source.native_etag}"',
                    MetadataDirective="REPLACE",
                    ContentType=content_type,
                    Metadata=_encode_metadata(metadata),
                )
        result = response["CopyObjectResult"]
        return ObjectInfo(
            bucket, key, source.info.size, _etag(result["ETag"]), result["LastModified"], content_type, dict(metadata)
        )

    # multipart uploads

    def create_upload(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> str:
        with _s3_errors(f"starting an upload of {key!r}", bucket=bucket, key=key):
            response = self.client.create_multipart_upload(
                Bucket=self.s3_name(bucket), Key=key, ContentType=content_type, Metadata=_encode_metadata(metadata)
            )
        return str(response["UploadId"])

    def new_part(self, bucket: str, key: str, upload_id: str, part_number: int) -> S3PartWriter:
        # Fail before the client streams a whole part at an upload that does not exist.
        with _s3_errors("uploading a part", bucket=bucket, key=key, upload_id=upload_id):
            self.client.list_parts(Bucket=self.s3_name(bucket), Key=key, UploadId=upload_id, MaxParts=1)
        return S3PartWriter(self, bucket, key, upload_id, part_number)

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        parts = []
        with _s3_errors("listing parts", bucket=bucket, key=key, upload_id=upload_id):
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.s3_name(bucket), Key=key, UploadId=upload_id
            )
            for page in pages:
                for part in page.get("Parts", []):
                    parts.append(PartInfo(part["PartNumber"], _etag(part["ETag"]), part["Size"], part["LastModified"]))
        # SeaweedFS lists a re-uploaded part number twice (and completes by ETag): keep the newest, judged by
        # what this process uploaded last, else by time (whole seconds, so ties are possible).
        newest: dict[int, PartInfo] = {}
        for part in parts:
            known = self._recent_parts.get((bucket, key, upload_id, part.part_number))
            current = newest.get(part.part_number)
            if current is None or (
                current.etag != known and (part.etag == known or part.last_modified >= current.last_modified)
            ):
                newest[part.part_number] = part
        return [newest[number] for number in sorted(newest)]

    def remember_part(self, bucket: str, key: str, upload_id: str, part: PartInfo) -> None:
        with self._recent_lock:
            self._recent_parts[(bucket, key, upload_id, part.part_number)] = part.etag
            self._recent_parts.move_to_end((bucket, key, upload_id, part.part_number))
            while len(self._recent_parts) > _RECENT_PARTS:
                self._recent_parts.popitem(last=False)

    def complete_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[PartInfo], etag: str, check: Check
    ) -> ObjectInfo:
        with self.key_lock(bucket, key):
            check(self.head_object(bucket, key))
            with _s3_errors("completing an upload", bucket=bucket, key=key, upload_id=upload_id):
                self.client.complete_multipart_upload(
                    Bucket=self.s3_name(bucket),
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": p.part_number, "ETag": f'"{p.etag}"'} for p in parts]},
                )
            info = self.head_object(bucket, key)
        if info is None:
            raise Aborted(f"object {key!r} was deleted right after its upload completed", reason="CONCURRENT_CHANGE")
        return info

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        with _s3_errors("aborting an upload", bucket=bucket, key=key, upload_id=upload_id):
            # S3 answers 204 for an unknown upload id; list it first so a wrong id is NOT_FOUND everywhere.
            self.client.list_parts(Bucket=self.s3_name(bucket), Key=key, UploadId=upload_id, MaxParts=1)
            self.client.abort_multipart_upload(Bucket=self.s3_name(bucket), Key=key, UploadId=upload_id)
