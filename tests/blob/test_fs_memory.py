"""Objects stream through the service in bounded memory, both ways (measured on the service process)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from strata.blob.v1 import blob_pb2, blob_pb2_grpc
from tests.support.servers import ServerProcess, free_port

MIB = 1024 * 1024
SIZE = 96 * MIB


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read RSS")
def test_large_object_streams_in_bounded_memory(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        "STRATA_DATA_DIR": str(tmp_path / "data"),
        "STRATA_BLOB_LISTEN": address,
        "STRATA_LOG_LEVEL": "warning",
        # The allocator may keep up to 64 MiB of freed chunks for reuse by default: RSS then
        # measures that cache as well as what the stream holds (28-52 MiB here, 16-24 without).
        "STRATA_ALLOCATOR_KEEP_MIB": "0",
    }
    with ServerProcess("services.blob", env, address, tmp_path / "blob.log") as server:
        assert server.proc is not None
        pid = server.proc.pid
        peak = [0.0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                peak[0] = max(peak[0], _rss_mib(pid))

        block = os.urandom(MIB)

        def requests() -> Iterator[blob_pb2.PutObjectRequest]:
            yield blob_pb2.PutObjectRequest(header=blob_pb2.PutObjectHeader(bucket="mem", key="big"))
            for _ in range(SIZE // MIB):
                yield blob_pb2.PutObjectRequest(chunk=block)

        with grpc.insecure_channel(address) as channel:
            stub = blob_pb2_grpc.BlobServiceStub(channel)
            stub.CreateBucket(blob_pb2.CreateBucketRequest(name="mem"))
            idle = _rss_mib(pid)
            sampler = threading.Thread(target=sample)
            sampler.start()
            try:
                assert stub.PutObject(requests(), timeout=120).object.size == SIZE
                received = 0
                # Read slowly at first so the server must hold back rather than buffer the object.
                for number, message in enumerate(stub.GetObject(blob_pb2.GetObjectRequest(bucket="mem", key="big"))):
                    if number < 5:
                        stop.wait(0.2)
                    received += len(message.chunk)
            finally:
                stop.set()
                sampler.join()
        assert received == SIZE
        growth = peak[0] - idle
        # A buffered object would add at least its 96 MiB; streaming holds a few 1 MiB chunks.
        assert growth < 48, f"service RSS grew {growth:.0f} MiB while moving a {SIZE // MIB} MiB object"
