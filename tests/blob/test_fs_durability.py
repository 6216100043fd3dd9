"""Filesystem backend: acknowledged writes survive SIGKILL; interrupted writes leave the old object; leftovers go."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.blob.backends.fs import FilesystemBackend
from strata.blob.v1 import blob_pb2, blob_pb2_grpc
from tests.contract.blob.client import get, put, put_requests
from tests.support.servers import ServerProcess, free_port


def _process(data_dir: Path, tmp_path: Path) -> ServerProcess:
    address = f"127.0.0.1:{free_port()}"
    env = {"STRATA_DATA_DIR": str(data_dir), "STRATA_BLOB_LISTEN": address, "STRATA_LOG_LEVEL": "warning"}
    return ServerProcess("services.blob", env, address, tmp_path / "blob.log")


@pytest.mark.slow
def test_acknowledged_writes_survive_sigkill_and_torn_writes_vanish(data_dir: Path, tmp_path: Path) -> None:
    first = _process(data_dir, tmp_path).start()
    written: dict[str, bytes] = {}
    try:
        with grpc.insecure_channel(first.address) as channel:
            stub = blob_pb2_grpc.BlobServiceStub(channel)
            stub.CreateBucket(blob_pb2.CreateBucketRequest(name="durable"))
            for index in range(20):
                data = os.urandom(1000 + index * 5000)
                put(stub, "durable", f"doc/{index}", data, metadata={"n": str(index)})
                written[f"doc/{index}"] = data
            put(stub, "durable", "big", b"old version")
            # A replacement of "big" is mid-stream when the process dies: the old version must remain.
            halfway, release = threading.Event(), threading.Event()

            def slow_requests() -> Iterator[blob_pb2.PutObjectRequest]:
                for number, request in enumerate(put_requests("durable", "big", os.urandom(64 << 20), chunk=1 << 20)):
                    if number == 8:
                        halfway.set()
                        release.wait(60)  # the stream never ends: the server is killed first
                    yield request

            future = stub.PutObject.future(slow_requests())
            assert halfway.wait(30)
            tmp_dir = data_dir / "blob" / "tmp"
            # The server has started its temporary file once bytes arrive.
            deadline = time.monotonic() + 30
            while not any(tmp_dir.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.02)
            first.kill()
            release.set()
            future.cancel()
    finally:
        release.set()
        first.kill()
    assert any((data_dir / "blob" / "tmp").iterdir()), "the interrupted write left a temporary file"

    with _process(data_dir, tmp_path) as second, grpc.insecure_channel(second.address) as channel:
        stub = blob_pb2_grpc.BlobServiceStub(channel)
        assert list((data_dir / "blob" / "tmp").iterdir()) == []
        for key, data in written.items():
            header, body = get(stub, "durable", key)
            assert body == data
            assert header.object.etag == hashlib.md5(data).hexdigest()
        assert get(stub, "durable", "big")[1] == b"old version"


def test_orphaned_temporary_files_are_removed_at_start(data_dir: Path) -> None:
    first = FilesystemBackend(data_dir / "blob")
    first.open()
    first.close()
    tmp_dir = data_dir / "blob" / "tmp"
    (tmp_dir / "0123.tmp").write_bytes(b"half an object")
    (tmp_dir / "trash-x").mkdir()
    (tmp_dir / "trash-x" / "leftover").write_bytes(b"x")
    backend = FilesystemBackend(data_dir / "blob")
    backend.open()
    try:
        assert list(tmp_dir.iterdir()) == []
    finally:
        backend.close()


def test_a_second_service_on_the_same_folder_is_refused(data_dir: Path, fs_stub) -> None:
    # fs_stub's server holds the folder; a second one must not clean its temporary files away.
    with pytest.raises(OSError, match="another blob service"):
        FilesystemBackend(data_dir / "blob").open()


def test_object_file_holds_content_then_metadata(fs_stub, data_dir: Path) -> None:
    fs_stub.CreateBucket(blob_pb2.CreateBucketRequest(name="layout"))
    put(fs_stub, "layout", "k", b"hello", metadata={"a": "b"})
    files = [p for p in (data_dir / "blob" / "buckets" / "layout" / "objects").rglob("*") if p.is_file()]
    assert len(files) == 1
    raw = files[0].read_bytes()
    assert raw.startswith(b"hello") and raw.endswith(b"STRATAB1")
    assert files[0].name == b"k".hex() + ".o"
