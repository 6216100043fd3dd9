"""A server on the services' own runtime (same interceptor, health, metrics) around a servicer that
does no work: the baseline that shows what the runtime and Python gRPC cost by themselves."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

import grpc

from services.runtime import memory
from services.runtime.server import ManagedServer, ServiceSpec, serve_until_signalled
from services.runtime.settings import RuntimeSettings


def serve_on_runtime(address: str, service_name: str, register: Callable[[grpc.aio.Server], None]) -> None:
    """Serve until SIGTERM/SIGINT; `register` adds the do-nothing servicer. Memory is tuned as
    `services.runtime.server.run` tunes it for every service."""
    settings = RuntimeSettings(log_level="warning")
    memory.keep_freed_memory(settings.allocator_keep_mib)
    memory.collect_garbage_less_often()

    async def main() -> None:
        spec = ServiceSpec(service_names=[service_name], register=register)
        await serve_until_signalled(ManagedServer(spec, address, settings), 1.0)

    asyncio.run(main())


def start_baseline_process(
    script: Path, address: str, env: dict[str, str], cwd: Path, log: IO[bytes]
) -> subprocess.Popen:
    """Run `script --serve-sink ADDRESS` (a bench that calls `serve_on_runtime` for that flag) as a
    process of its own, as the service under test is."""
    return subprocess.Popen(
        [sys.executable, str(script), "--serve-sink", address], env=env, cwd=cwd, stdout=log, stderr=log
    )
