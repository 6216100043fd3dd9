"""Run real Strata servers for tests: in a background thread on port 0, or as a subprocess.

Tests stay synchronous and talk to servers like any user would: over a real
channel with the generated stubs.

    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        stub = VectorServiceStub(grpc.insecure_channel(address))
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serve_in_thread(make_server: Callable[[], tuple[Any, int]], grace: float = 1.0) -> Iterator[str]:
    """Start a ManagedServer from `make_server` on its own event loop; yield "127.0.0.1:port"."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        try:
            server, port = make_server()
            holder["server"], holder["port"] = server, port
            await server.start()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test thread below
            holder["error"] = exc
            started.set()
            return
        holder["stop"] = asyncio.Event()
        started.set()
        await holder["stop"].wait()
        await server.stop(grace)

    thread = threading.Thread(target=lambda: loop.run_until_complete(main()), daemon=True)
    thread.start()
    if not started.wait(120):
        raise TimeoutError("server did not start within 120 s")
    if "error" in holder:
        raise holder["error"]
    try:
        yield f"127.0.0.1:{holder['port']}"
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(30)
        loop.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_serving(
    address: str, timeout: float = 60.0, service: str = "", credentials: grpc.ChannelCredentials | None = None
) -> None:
    """Block until the health service at `address` reports SERVING."""
    deadline = time.monotonic() + timeout
    last: Exception | str = "no answer"
    channel_cm = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel_cm as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.05)
    raise TimeoutError(f"{address} not SERVING after {timeout} s: {last}")


class ServerProcess:
    """A service run as `python -m <module>` in a subprocess, for crash and signal tests."""

    def __init__(self, module: str, env: Mapping[str, str], address: str, log_path: Path) -> None:
        self.module, self.address, self.log_path = module, address, log_path
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        self.env = {**clean, "PYTHONPATH": str(REPO_ROOT), **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> ServerProcess:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=log, cwd=REPO_ROOT
        )
        try:
            wait_serving(self.address, timeout)
        except TimeoutError:
            self.kill()
            raise TimeoutError(f"{self.module} did not serve; log:\n{self.log_path.read_text()[-4000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
