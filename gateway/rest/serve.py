"""Runs the REST app on uvicorn inside the gateway's event loop, beside the gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import uvicorn
from starlette.applications import Starlette

from services.runtime import tracing

log = logging.getLogger("strata.rest")


class RestServer:
    def __init__(self, app: Starlette, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.config = uvicorn.Config(
            tracing.asgi_middleware(app),
            host=host.strip("[]") or "127.0.0.1",
            port=int(port),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(self.config)
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        # serve() would capture SIGTERM/SIGINT; the runtime owns signals and stops REST itself.
        self._task = asyncio.create_task(self.server._serve())
        while not self.server.started:
            if self._task.done():
                raise OSError(f"REST server could not bind {self.config.host}:{self.config.port}")
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        log.info("REST serving", extra={"port": self.port})

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
