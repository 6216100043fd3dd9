"""A Milvus Lite server for the test session, started on a free loopback port."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import free_port


def milvus_lite_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("milvus-lite")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("milvus-lite")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def milvus_lite(data_dir: Path, timeout: float = 60.0) -> Iterator[str]:
    """Yield the URI of a running Milvus Lite server; raise RuntimeError if it cannot start."""
    binary = milvus_lite_binary()
    if binary is None:
        raise FileNotFoundError("milvus-lite is not installed (pip install milvus-lite)")
    port = free_port()
    log_path = data_dir / "milvus-lite.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [binary, "server", "--data-dir", str(data_dir / "data"), "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"milvus-lite did not start; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)
