"""Filesystem backend: concurrent puts end with one whole winner; readers see old or new, never a mix."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from strata.blob.v1 import blob_pb2
from tests.contract.blob.client import get, put

SIZE = 3 * 1024 * 1024 + 17  # several GetObject chunks, so a torn read would show


def _content(tag: int) -> bytes:
    return bytes([tag]) * SIZE


def test_concurrent_puts_leave_one_whole_winner(fs_stub) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="race"))
    writers = 8
    with ThreadPoolExecutor(writers) as pool:
        infos = list(pool.map(lambda tag: put(fs_stub, "race", "key", _content(tag), chunk=256 * 1024), range(writers)))
    assert all(info.size == SIZE for info in infos)
    header, body = get(fs_stub, "race", "key")
    assert body in {_content(tag) for tag in range(writers)}
    assert header.object.etag == hashlib.md5(body).hexdigest()


def test_create_only_puts_race_to_exactly_one_success(fs_stub) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="race"))

    def attempt(tag: int) -> bool:
        try:
            put(fs_stub, "race", "once", _content(tag)[:1000], if_none_match="*")
            return True
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attempt, range(8)))
    assert results.count(True) == 1


def test_readers_see_old_or_new_while_replaced(fs_stub) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="race"))
    versions = {hashlib.md5(_content(tag)).hexdigest(): _content(tag) for tag in (1, 2)}
    put(fs_stub, "race", "key", _content(1))
    stop = threading.Event()
    seen: list[str] = []
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            header, body = get(fs_stub, "race", "key")
            if versions.get(header.object.etag) != body:
                problems.append(f"header {header.object.etag} with {len(body)} bytes of another version")
            seen.append(header.object.etag)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        for round_ in range(12):
            put(fs_stub, "race", "key", _content(2 if round_ % 2 == 0 else 1), chunk=512 * 1024)
    finally:
        stop.set()
        for thread in readers:
            thread.join(60)
    assert problems == []
    assert len(seen) > 3


def _open_object_files(data_dir) -> int:
    objects = str(data_dir / "blob" / "buckets")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(objects)
    return count


def test_cancelled_reads_release_their_files(fs_stub, data_dir) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="cancel"))
    put(fs_stub, "cancel", "big", _content(3))
    for number in range(20):
        call = fs_stub.GetObject(blob_pb2.GetObjectRequest(bucket="cancel", key="big"))
        if number % 2:
            next(call)  # the header arrived; the server is streaming chunks
        call.cancel()
    deadline = time.monotonic() + 10
    while _open_object_files(data_dir) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _open_object_files(data_dir) == 0
