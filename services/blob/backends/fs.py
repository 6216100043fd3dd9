"""Objects as files under STRATA_DATA_DIR/blob: one file per object version, published by rename.

Layout:
    tmp/                                 files being written; emptied at start
    buckets/<bucket>/bucket.json         creation time
    buckets/<bucket>/objects/<hex key>   one file per object (see below)
    buckets/<bucket>/uploads/<id>/       upload.json and part-NNNNN files of a multipart upload

Why one file holding content and metadata: a writer fills a temporary file, fsyncs
it, renames it over the key's path and fsyncs the directory. The rename is the only
step that changes what the key means, and it swaps content and metadata together, so a
crash leaves the old version or the new one, never a mix; a reader that opened the old
file keeps reading that inode whole while it is replaced. The metadata is a trailer
(content, JSON, 8-byte length, magic) because the ETag and size are known only at the end.

Why hex file names: a key is arbitrary UTF-8 up to 1,024 bytes, so it cannot be a path
(`..`, `/abs`, `\\`, NUL, case-insensitive disks, `a` next to `a/b`). Its hex encoding
can never name anything outside the bucket, keeps byte order (so listings sort by
name), and is split into 200-character segments (`<seg>.d/.../<seg>.o`) to stay under
the 255-byte name limit.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import shutil
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from services.blob.backends.base import BucketInfo, Check, ObjectInfo, PartInfo
from services.blob.backends.md5_stream import Md5Stream
from services.runtime.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable

MAGIC = b"STRATAB1"
_TRAILER = struct.Struct(">Q8s")
_SEGMENT = 200
_TAIL_READ = 8192
_LOCK_STRIPES = 1024
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hex_path(hexed: str) -> str:
    segments = [hexed[i : i + _SEGMENT] for i in range(0, len(hexed), _SEGMENT)]
    return "/".join([s + ".d" for s in segments[:-1]] + [segments[-1] + ".o"])


def _key_path(key: str) -> Path:
    return Path(_hex_path(key.encode("utf-8").hex()))


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """Translate disk failures in one place; a full or read-only disk is the operator's problem, not INTERNAL."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise Unavailable(f"{what}: the disk is full", reason="DISK_FULL") from exc
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EIO):
            raise Unavailable(f"{what}: the disk refused the write ({exc.strerror})", reason="DISK_ERROR") from exc
        raise


class _Trailer:
    """Reads the metadata trailer of an object or part file through an open descriptor."""

    @staticmethod
    def read(fd: int) -> tuple[dict[str, Any], int]:
        """(metadata, content size); raises ValueError for a file that is not an object file."""
        total = os.fstat(fd).st_size
        if total < _TRAILER.size:
            raise ValueError("file too short")
        # One read usually holds the whole trailer (metadata is at most a few KiB).
        tail_start = max(0, total - _TAIL_READ)
        tail = os.pread(fd, total - tail_start, tail_start)
        length, magic = _TRAILER.unpack(tail[-_TRAILER.size :])
        if magic != MAGIC or length > total - _TRAILER.size:
            raise ValueError("no trailer")
        start = total - _TRAILER.size - length
        body = tail[start - tail_start : -_TRAILER.size] if start >= tail_start else os.pread(fd, length, start)
        return json.loads(body), start

    @staticmethod
    def encode(meta: Mapping[str, Any]) -> bytes:
        body = json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()
        return body + _TRAILER.pack(len(body), MAGIC)


class FileObjectReader:
    def __init__(self, fd: int, info: ObjectInfo) -> None:
        self._fd = fd
        self.info = info

    def read(self, offset: int, length: int, chunk_bytes: int) -> Iterator[bytes]:
        end = offset + length
        while offset < end:
            data = os.pread(self._fd, min(chunk_bytes, end - offset), offset)
            if not data:
                raise Unavailable("object file shrank while being read", reason="DISK_ERROR")
            offset += len(data)
            yield data

    def copy_to(self, out: BinaryIO) -> None:
        """Copy the content into `out`: in the kernel where it can (Linux), else through memory."""
        out.flush()
        offset, remaining = 0, self.info.size
        in_kernel = hasattr(os, "copy_file_range")
        while remaining:
            sent = 0
            if in_kernel:
                try:
                    sent = os.copy_file_range(self._fd, out.fileno(), min(remaining, 1 << 30), offset)
                except OSError as exc:
                    if exc.errno not in _NO_KERNEL_COPY:
                        raise
                    in_kernel = False
            if not in_kernel:
                data = os.pread(self._fd, min(remaining, _COPY_BUFFER_BYTES), offset)
                out.write(data)
                sent = len(data)
            if sent == 0:
                raise Unavailable("object file shrank while being copied", reason="DISK_ERROR")
            offset += sent
            remaining -= sent

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        # Last resort for a reader nobody closed; unreachable, so no one else can be using the descriptor.
        self.close()


def _start_writeback() -> Callable[[int, int, int], None]:
    """sync_file_range(SYNC_FILE_RANGE_WRITE) where the C library has it, else nothing.

    Starting write-back of what is already written, without waiting, lets the disk
    work while the rest of a large object streams in, so the final fsync finds
    little left to do (a plain copy pays for all of it at the end).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sync_file_range = libc.sync_file_range
    except (OSError, AttributeError):
        return lambda fd, offset, length: None
    sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)

    def start(fd: int, offset: int, length: int) -> None:
        sync_file_range(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE; a failure only loses the head start

    return start


_writeback = _start_writeback()
_WRITEBACK_BYTES = 8 * 1024 * 1024
# copy_file_range is Linux's; where it is missing or refuses these files, copy in steps of this size.
_NO_KERNEL_COPY = (errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP)
_COPY_BUFFER_BYTES = 1024 * 1024


class _TempFile:
    """A file in tmp/ that becomes an object or part by rename, or disappears."""

    def __init__(self, tmp_dir: Path) -> None:
        self.path = tmp_dir / f"{uuid.uuid4().hex}.tmp"
        self.file: BinaryIO = open(self.path, "xb")
        self.md5 = Md5Stream()
        self.size = 0
        self.done = False
        self._written_back = 0

    def write(self, data: bytes) -> None:
        self.md5.update(data)  # hashed while this chunk is written and the next one arrives
        with _os_errors("writing an object"):
            self.file.write(data)
        self.size += len(data)
        if self.size - self._written_back >= _WRITEBACK_BYTES:
            self.file.flush()
            _writeback(self.file.fileno(), self._written_back, self.size - self._written_back)
            self._written_back = self.size

    def seal(self, meta: Mapping[str, Any]) -> None:
        with _os_errors("writing an object"):
            self.file.write(_Trailer.encode(meta))
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.md5.close()
            self.file.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


class FileObjectWriter:
    def __init__(
        self, backend: FilesystemBackend, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]
    ):
        self._backend, self._bucket, self._key = backend, bucket, key
        self._content_type, self._metadata = content_type, dict(metadata)
        self._tmp = _TempFile(backend.tmp_dir)

    def write(self, data: bytes) -> None:
        self._tmp.write(data)

    def commit(self, check: Check) -> ObjectInfo:
        try:
            now = time.time_ns()
            etag = self._tmp.md5.hexdigest()
            meta = {
                "key": self._key,
                "etag": etag,
                "content_type": self._content_type,
                "metadata": self._metadata,
                "time": now,
            }
            self._tmp.seal(meta)
            info = ObjectInfo(
                self._bucket, self._key, self._tmp.size, etag, _utc(now), self._content_type, self._metadata
            )
            self._backend.publish(self._tmp.path, self._bucket, self._key, check)
            self._tmp.done = True
            return info
        finally:
            self._tmp.abort()

    def abort(self) -> None:
        self._tmp.abort()


class FilePartWriter:
    def __init__(self, backend: FilesystemBackend, upload_dir: Path, part_number: int) -> None:
        self._upload_dir, self._number = upload_dir, part_number
        self._tmp = _TempFile(backend.tmp_dir)

    def write(self, data: bytes) -> None:
        self._tmp.write(data)

    def commit(self) -> PartInfo:
        try:
            now = time.time_ns()
            etag = self._tmp.md5.hexdigest()
            self._tmp.seal({"part_number": self._number, "etag": etag, "time": now})
            try:
                with _os_errors("storing a part"):
                    os.replace(self._tmp.path, self._upload_dir / f"part-{self._number:05d}")
                    _fsync_dir(self._upload_dir)
            except FileNotFoundError as exc:
                raise NotFound("the multipart upload was completed or aborted", reason="UPLOAD_NOT_FOUND") from exc
            self._tmp.done = True
            return PartInfo(self._number, etag, self._tmp.size, _utc(now))
        finally:
            self._tmp.abort()

    def abort(self) -> None:
        self._tmp.abort()


class FilesystemBackend:
    """The default backend; see the module docstring for the layout and why it is crash-safe."""

    min_part_bytes = 0

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.buckets_dir = root / "buckets"
        self._key_locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        # Bucket creation and deletion are rare; one lock keeps them from interleaving.
        self._bucket_lock = threading.Lock()
        self._lock_file: BinaryIO | None = None

    # lifecycle

    def open(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.buckets_dir.mkdir(parents=True, exist_ok=True)
        # One process per folder: the cleanup below would destroy another live writer's files.
        self._lock_file = open(self.root / "lock", "a+b")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise OSError(f"another blob service is using {self.root}") from None
        # Anything in tmp/ is an unfinished write or an interrupted delete from a previous run.
        for leftover in self.tmp_dir.iterdir():
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def probe(self) -> bool:
        return self.buckets_dir.is_dir() and os.access(self.tmp_dir, os.W_OK)

    # buckets

    def _bucket_dir(self, name: str) -> Path:
        return self.buckets_dir / name

    def require_bucket(self, name: str) -> None:
        if not (self._bucket_dir(name) / "bucket.json").is_file():
            raise NotFound(f"bucket {name!r} does not exist", reason="BUCKET_NOT_FOUND", metadata={"bucket": name})

    def create_bucket(self, name: str) -> BucketInfo:
        with self._bucket_lock, _os_errors("creating a bucket"):
            if self._bucket_dir(name).exists():
                raise AlreadyExists(
                    f"bucket {name!r} already exists", reason="BUCKET_EXISTS", metadata={"bucket": name}
                )
            staging = self.tmp_dir / f"bucket-{uuid.uuid4().hex}"
            (staging / "objects").mkdir(parents=True)
            (staging / "uploads").mkdir()
            now = time.time_ns()
            with open(staging / "bucket.json", "x") as f:
                json.dump({"name": name, "time": now}, f)
                f.flush()
                os.fsync(f.fileno())
            for sub in ("objects", "uploads", ""):
                _fsync_dir(staging / sub)
            os.rename(staging, self._bucket_dir(name))
            _fsync_dir(self.buckets_dir)
            return BucketInfo(name, _utc(now))

    def list_buckets(self) -> list[BucketInfo]:
        found = []
        for entry in sorted(os.listdir(self.buckets_dir)):
            try:
                with open(self.buckets_dir / entry / "bucket.json") as f:
                    found.append(BucketInfo(entry, _utc(json.load(f)["time"])))
            except (FileNotFoundError, NotADirectoryError):
                continue
        return found

    def delete_bucket(self, name: str) -> None:
        with self._bucket_lock:
            self.require_bucket(name)
            bucket_dir = self._bucket_dir(name)
            # Move it out of sight first, so no write can land in it between the check and the removal.
            trash = self.tmp_dir / f"trash-{uuid.uuid4().hex}"
            os.rename(bucket_dir, trash)
            objects = bool(self._walk(trash / "objects", "", ""))
            uploads = any((trash / "uploads").iterdir())
            if objects or uploads:
                os.rename(trash, bucket_dir)
                what = "objects" if objects else "multipart uploads"
                raise FailedPrecondition(
                    f"bucket {name!r} still holds {what}; delete them first",
                    reason="BUCKET_NOT_EMPTY",
                    metadata={"bucket": name},
                )
            _fsync_dir(self.buckets_dir)
            shutil.rmtree(trash, ignore_errors=True)

    # objects

    def _lock(self, bucket: str, key: str) -> threading.Lock:
        return self._key_locks[zlib.crc32(f"{bucket}\x00{key}".encode()) % _LOCK_STRIPES]

    def _object_path(self, bucket: str, key: str) -> Path:
        return self._bucket_dir(bucket) / "objects" / _key_path(key)

    def _open_path(self, path: Path, bucket: str) -> FileObjectReader | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            self.require_bucket(bucket)
            return None
        try:
            meta, size = _Trailer.read(fd)
        except BaseException:
            os.close(fd)
            raise
        info = ObjectInfo(
            bucket, meta["key"], size, meta["etag"], _utc(meta["time"]), meta["content_type"], meta["metadata"]
        )
        return FileObjectReader(fd, info)

    def open_object(self, bucket: str, key: str) -> FileObjectReader | None:
        return self._open_path(self._object_path(bucket, key), bucket)

    def head_object(self, bucket: str, key: str) -> ObjectInfo | None:
        reader = self.open_object(bucket, key)
        if reader is None:
            return None
        reader.close()
        return reader.info

    def new_object(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> FileObjectWriter:
        self.require_bucket(bucket)
        return FileObjectWriter(self, bucket, key, content_type, metadata)

    def publish(self, source: Path, bucket: str, key: str, check: Check) -> None:
        """Rename a sealed temporary file over the key's path, after `check`, under the key's lock."""
        target = self._object_path(bucket, key)
        with self._lock(bucket, key):
            check(self.head_object(bucket, key))
            with _os_errors("publishing an object"):
                try:
                    self._make_parents(target)
                    os.replace(source, target)
                except FileNotFoundError as exc:
                    raise NotFound(f"bucket {bucket!r} was deleted", reason="BUCKET_NOT_FOUND") from exc
                _fsync_dir(target.parent)

    def _make_parents(self, target: Path) -> None:
        # Never os.makedirs: a deleted bucket must not be re-created by a late write.
        missing = []
        parent = target.parent
        while not parent.is_dir() and parent.name.endswith(".d"):
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                directory.mkdir()
            _fsync_dir(directory.parent)

    def delete_object(self, bucket: str, key: str, check: Check) -> None:
        target = self._object_path(bucket, key)
        with self._lock(bucket, key):
            current = self.head_object(bucket, key)
            check(current)
            if current is None:
                return
            with _os_errors("deleting an object"):
                target.unlink(missing_ok=True)
                _fsync_dir(target.parent)

    def _walk(self, directory: Path, done: str, prefix: str, after: str = "") -> list[str]:
        """Hex names of the objects below `directory` that start with hex `prefix` and sort after `after`."""
        try:
            entries = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        for entry in entries:
            hexed = done + entry[:-2]
            if entry.endswith(".o"):
                if hexed > after and hexed.startswith(prefix):
                    found.append(hexed)
            elif entry.endswith(".d") and (hexed.startswith(prefix) or prefix.startswith(hexed)):
                found += self._walk(directory / entry, hexed, prefix, after)
        return found

    def iter_objects(self, bucket: str, prefix: str, start_after: str) -> Iterator[ObjectInfo]:
        self.require_bucket(bucket)
        objects = self._bucket_dir(bucket) / "objects"
        after = start_after.encode().hex()
        names = sorted(self._walk(objects, "", prefix.encode().hex(), after))
        objects_fd = os.open(objects, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for hexed in names:
                try:
                    fd = os.open(_hex_path(hexed), os.O_RDONLY, dir_fd=objects_fd)
                except FileNotFoundError:
                    continue  # deleted since the walk
                try:
                    meta, size = _Trailer.read(fd)
                finally:
                    os.close(fd)
                yield ObjectInfo(bucket, meta["key"], size, meta["etag"], _utc(meta["time"]))
        finally:
            os.close(objects_fd)

    def copy_object(
        self,
        source: Any,
        bucket: str,
        key: str,
        content_type: str,
        metadata: Mapping[str, str],
        check: Check,
    ) -> ObjectInfo:
        self.require_bucket(bucket)
        tmp = _TempFile(self.tmp_dir)
        try:
            with _os_errors("copying an object"):
                source.copy_to(tmp.file)
            now = time.time_ns()
            etag = source.info.etag  # same bytes, same ETag (multipart ETags included, as S3 keeps them)
            tmp.seal({"key": key, "etag": etag, "content_type": content_type, "metadata": dict(metadata), "time": now})
            self.publish(tmp.path, bucket, key, check)
            tmp.done = True
            return ObjectInfo(bucket, key, source.info.size, etag, _utc(now), content_type, dict(metadata))
        finally:
            tmp.abort()

    # multipart uploads

    def _upload_dir(self, bucket: str, key: str, upload_id: str) -> Path:
        # Ids this backend mints are 32 hex digits; anything else (a path, "..") names no upload.
        if not _UPLOAD_ID.fullmatch(upload_id):
            self.require_bucket(bucket)
            raise NotFound(f"no multipart upload {upload_id[:80]!r}", reason="UPLOAD_NOT_FOUND")
        upload_dir = self._bucket_dir(bucket) / "uploads" / upload_id
        try:
            with open(upload_dir / "upload.json") as f:
                owner = json.load(f)["key"]
        except (FileNotFoundError, NotADirectoryError):
            self.require_bucket(bucket)
            owner = None
        if owner != key:
            raise NotFound(
                f"no multipart upload {upload_id!r} for key {key!r} in bucket {bucket!r}",
                reason="UPLOAD_NOT_FOUND",
                metadata={"upload_id": upload_id},
            )
        return upload_dir

    def create_upload(self, bucket: str, key: str, content_type: str, metadata: Mapping[str, str]) -> str:
        self.require_bucket(bucket)
        upload_id = uuid.uuid4().hex
        staging = self.tmp_dir / f"upload-{upload_id}"
        with _os_errors("creating a multipart upload"):
            staging.mkdir()
            with open(staging / "upload.json", "x") as f:
                json.dump(
                    {"key": key, "content_type": content_type, "metadata": dict(metadata), "time": time.time_ns()},
                    f,
                    ensure_ascii=False,
                )
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(staging)
            uploads = self._bucket_dir(bucket) / "uploads"
            try:
                os.rename(staging, uploads / upload_id)
            except FileNotFoundError as exc:
                raise NotFound(f"bucket {bucket!r} was deleted", reason="BUCKET_NOT_FOUND") from exc
            _fsync_dir(uploads)
        return upload_id

    def new_part(self, bucket: str, key: str, upload_id: str, part_number: int) -> FilePartWriter:
        return FilePartWriter(self, self._upload_dir(bucket, key, upload_id), part_number)

    def _part_files(self, upload_dir: Path) -> Iterator[Path]:
        for entry in sorted(os.listdir(upload_dir)):
            if entry.startswith("part-"):
                yield upload_dir / entry

    def list_parts(self, bucket: str, key: str, upload_id: str) -> list[PartInfo]:
        upload_dir = self._upload_dir(bucket, key, upload_id)
        parts = []
        for path in self._part_files(upload_dir):
            reader = self._open_part(path)
            if reader is not None:
                parts.append(reader[1])
                os.close(reader[0])
        return parts

    @staticmethod
    def _open_part(path: Path) -> tuple[int, PartInfo] | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            meta, size = _Trailer.read(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd, PartInfo(meta["part_number"], meta["etag"], size, _utc(meta["time"]))

    def complete_upload(
        self, bucket: str, key: str, upload_id: str, parts: Sequence[PartInfo], etag: str, check: Check
    ) -> ObjectInfo:
        upload_dir = self._upload_dir(bucket, key, upload_id)
        with open(upload_dir / "upload.json") as f:
            upload = json.load(f)
        tmp = _TempFile(self.tmp_dir)
        try:
            size = 0
            for wanted in parts:
                opened = self._open_part(upload_dir / f"part-{wanted.part_number:05d}")
                if opened is None or opened[1].etag != wanted.etag:
                    if opened is not None:
                        os.close(opened[0])
                    raise InvalidArgument(
                        f"part {wanted.part_number} changed or vanished while completing; retry",
                        reason="PART_MISMATCH",
                    )
                fd, info = opened
                reader = FileObjectReader(fd, ObjectInfo(bucket, key, info.size, info.etag, info.last_modified))
                try:
                    with _os_errors("completing a multipart upload"):
                        reader.copy_to(tmp.file)
                finally:
                    reader.close()
                size += info.size
            now = time.time_ns()
            tmp.seal(
                {
                    "key": key,
                    "etag": etag,
                    "content_type": upload["content_type"],
                    "metadata": upload["metadata"],
                    "time": now,
                }
            )
            self.publish(tmp.path, bucket, key, check)
            tmp.done = True
        finally:
            tmp.abort()
        # The object is published; a concurrent abort that already removed the upload changes nothing.
        with contextlib.suppress(NotFound):
            self._discard_upload(upload_dir)
        return ObjectInfo(bucket, key, size, etag, _utc(now), upload["content_type"], upload["metadata"])

    def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._discard_upload(self._upload_dir(bucket, key, upload_id))

    def _discard_upload(self, upload_dir: Path) -> None:
        trash = self.tmp_dir / f"trash-{uuid.uuid4().hex}"
        try:
            os.rename(upload_dir, trash)
        except FileNotFoundError as exc:
            raise NotFound("the multipart upload was completed or aborted", reason="UPLOAD_NOT_FOUND") from exc
        _fsync_dir(upload_dir.parent)
        shutil.rmtree(trash, ignore_errors=True)
