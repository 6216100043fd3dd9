"""The gateway's core: collections, documents and retrieval over the four layers, plus its lifecycle.

The gRPC servicer and the REST adapter are both thin adapters over this one object.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc

from gateway.catalog import Catalog
from gateway.collections import Collections, ensure_storage
from gateway.config import GatewaySettings
from gateway.deps import Deps
from gateway.documents import Documents
from gateway.retrieval import Retrieval
from gateway.sql import Sql
from gateway.upstreams import Upstreams
from services.runtime.errors import StrataError
from services.runtime.settings import ConfigError

log = logging.getLogger("strata.gateway")


def channel_credentials(settings: GatewaySettings) -> grpc.ChannelCredentials | None:
    """TLS to the layers when STRATA_TLS_CA_FILE is set."""
    if not settings.tls_ca_file:
        return None
    try:
        return grpc.ssl_channel_credentials(root_certificates=Path(settings.tls_ca_file).read_bytes())
    except OSError as exc:
        raise ConfigError(f"STRATA_TLS_CA_FILE={settings.tls_ca_file}: {exc.strerror}") from None


class RagApp:
    def __init__(self, settings: GatewaySettings) -> None:
        upstreams = Upstreams(
            inference=settings.inference_addr,
            vector=settings.vector_addr,
            metadata=settings.metadata_addr,
            blob=settings.blob_addr,
            timeout=settings.upstream_timeout_seconds,
            concurrency=settings.upstream_concurrency,
            credentials=channel_credentials(settings),
        )
        self.deps = Deps(settings, upstreams, Catalog(Sql(upstreams.metadata, settings.database)))
        self.collections = Collections(self.deps)
        self.documents = Documents(self.deps, self.collections)
        self.retrieval = Retrieval(self.deps, self.collections)
        self._recovery: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Wait for the layers, make sure storage exists, then clean up what a crash left behind."""
        delay = 0.1
        while True:
            try:
                await ensure_storage(self.deps)
                break
            except StrataError as exc:
                log.warning("waiting for the layers", extra={"error": str(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self._recovery = asyncio.create_task(self._janitor())

    async def _janitor(self) -> None:
        """Recover once at start, then keep finishing cleanups that a layer outage interrupted."""
        interrupted = True
        while True:
            await self.recover(interrupted=interrupted)
            interrupted = False
            await asyncio.sleep(self.deps.settings.janitor_seconds)

    async def recover(self, *, interrupted: bool) -> None:
        try:
            if interrupted:
                for name in await self.deps.catalog.collections_in_state("creating"):
                    await self.deps.catalog.set_collection_state(name, "deleting")
            for name in await self.deps.catalog.collections_in_state("deleting"):
                await self.collections.finish_delete(name)
            cleaned = await self.documents.recover(interrupted=interrupted)
            if cleaned:
                log.info("cleaned up unfinished ingests", extra={"documents": cleaned})
        except StrataError as exc:
            log.warning("recovery incomplete; it runs again later", extra={"error": str(exc)})

    def figures(self) -> dict[str, float]:
        """Backend figures for /metrics: calls in flight to each layer, ingests running."""
        figures = {f"upstream_{u.layer}_in_flight": float(u.in_flight) for u in self.deps.upstreams.all()}
        figures["ingests_in_flight"] = float(len(self.documents.in_flight))
        return figures

    async def probe(self) -> bool:
        """SERVING only while every layer is."""
        return all((await self.deps.upstreams.status()).values())

    async def close(self) -> None:
        if self._recovery is not None and not self._recovery.done():
            self._recovery.cancel()
        await self.deps.upstreams.close()
