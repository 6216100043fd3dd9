"""The server runtime every Strata service shares.

A layer describes itself as a `ServiceSpec` (what to register, how to open, probe
and close its backend). `ManagedServer` turns that into a grpc.aio server with the
shared interceptor, the standard health service and server reflection:

- `start()` binds and serves at once (health answers NOT_SERVING), opens the
  backend, then marks the service SERVING; RPCs before that get UNAVAILABLE.
- A background probe re-checks the backend and flips health accordingly.
- `stop(grace)` reports NOT_SERVING, lets in-flight calls finish within `grace`
  seconds, then closes the backend.
- Prometheus `/metrics` is served on a side port while the server runs
  (services.runtime.metrics); OpenTelemetry tracing is installed when the OTEL_*
  variables turn it on (services.runtime.tracing).

`run(...)` is the process entry point: settings, logging, signals, exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.runtime import limits, logs, memory, tracing
from services.runtime.interceptor import Admit, ServiceInterceptor
from services.runtime.metrics import ServerMetrics, metrics_address
from services.runtime.settings import ConfigError, RuntimeSettings, load

log = logging.getLogger("strata.server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# Generous message limits: vectors, SQL results and blob chunks are batched into few calls.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

S = TypeVar("S", bound=RuntimeSettings)


async def _nothing() -> None:
    return None


async def _always_healthy() -> bool:
    return True


@dataclass
class ServiceSpec:
    """What a layer hands the runtime."""

    # Full service names, e.g. "strata.vector.v1.VectorService", for health and reflection.
    service_names: Sequence[str]
    # Adds the servicer(s) to the server.
    register: Callable[[grpc.aio.Server], None]
    # Opens the backend (load snapshots, connect pools); runs after the port is bound.
    open: Callable[[], Awaitable[None]] = _nothing
    # True when the backend answers; polled for the health service.
    probe: Callable[[], Awaitable[bool]] = _always_healthy
    # Releases the backend after the server stopped.
    close: Callable[[], Awaitable[None]] = _nothing
    # Extra server options (e.g. message sizes).
    options: Sequence[tuple[str, int]] = field(default_factory=tuple)
    # Checks each call (method "/pkg.Service/Method", context) before it runs and raises a
    # StrataError to refuse it, e.g. API keys; health and reflection are never checked.
    admit: Admit | None = None
    # Backend figures for /metrics, e.g. {"vectors": 1200}, exported as gauges strata_backend_<name>
    # (names ending in _total as counters).
    # Called on the event loop at every scrape: keep it cheap and non-blocking.
    gauges: Callable[[], Mapping[str, float]] | None = None


def server_credentials(settings: RuntimeSettings) -> grpc.ServerCredentials:
    """TLS for this server from STRATA_TLS_CERT_FILE / STRATA_TLS_KEY_FILE."""
    try:
        cert = Path(settings.tls_cert_file).read_bytes()
        key = Path(settings.tls_key_file).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"STRATA_TLS_CERT_FILE/STRATA_TLS_KEY_FILE: cannot read {exc.filename}: {exc.strerror}"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])


class StartupError(RuntimeError):
    """The server could not open its backend; the message says why."""


class ManagedServer:
    """A grpc.aio server plus the lifecycle of the backend behind it."""

    def __init__(
        self,
        spec: ServiceSpec,
        address: str,
        settings: RuntimeSettings,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.address = address
        self._ready = False
        self._healthy = False
        self._probe_task: asyncio.Task[None] | None = None
        self.health = HealthServicer()
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            *spec.options,
        ]
        gauges = self._backend_figures if spec.gauges is not None else None
        self.metrics = ServerMetrics(gauges, serving=lambda: self._ready and self._healthy)
        self.server = grpc.aio.server(
            interceptors=[
                *tracing.server_interceptors(tracing.default_service_name(spec.service_names)),
                ServiceInterceptor(
                    lambda: self._ready, self.metrics if settings.metrics_port_offset else None, spec.admit
                ),
            ],
            options=options,
        )
        spec.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*spec.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server,
        )
        if credentials is None and settings.tls_cert_file:
            credentials = server_credentials(settings)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError:  # grpcio raises where it used to return 0
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {address}: another process may hold the port, or the host is not this one")

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def metrics_port(self) -> int | None:
        """The bound /metrics HTTP port while serving; None when metrics are off or could not bind."""
        return self.metrics.port

    def _backend_figures(self) -> Mapping[str, float]:
        # Only an open backend has figures to give.
        return self.spec.gauges() if self._ready and self.spec.gauges is not None else {}

    def _serve_metrics(self) -> None:
        # Observability must not take the service down: a metrics port that cannot bind is logged.
        try:
            where = metrics_address(self.address, self.port, self.settings.metrics_port_offset)
            if where is not None:
                self.metrics.serve(*where, certfile=self.settings.tls_cert_file, keyfile=self.settings.tls_key_file)
        except (OSError, ValueError) as exc:
            log.error("cannot serve metrics", extra={"error": str(exc)})

    async def _set_health(self, status: int) -> None:
        for name in ("", *self.spec.service_names):
            await self.health.set(name, status)

    async def start(self) -> None:
        """Serve at once, open the backend, then report SERVING."""
        await self._set_health(NOT_SERVING)
        await self.server.start()
        self._serve_metrics()
        await self.spec.open()
        self._ready = True
        if await self._probe_safely():
            await self._set_health(SERVING)
        self._probe_task = asyncio.create_task(self._probe_loop())
        log.info(
            "serving",
            extra={"services": list(self.spec.service_names), "port": self.port, "metrics_port": self.metrics_port},
        )

    async def _probe_safely(self) -> bool:
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow the cancel that
            # stop() sends when the probe finishes at the same moment, and stop() then waits forever.
            async with asyncio.timeout(10):
                self._healthy = bool(await self.spec.probe())
        except Exception as exc:  # noqa: BLE001 - a failing probe is just "not healthy"
            log.warning("backend probe failed", extra={"error": repr(exc)})
            self._healthy = False
        return self._healthy

    async def _probe_loop(self) -> None:
        last: bool | None = None
        while True:
            healthy = await self._probe_safely()
            if healthy != last:
                await self._set_health(SERVING if healthy else NOT_SERVING)
                last = healthy
            await asyncio.sleep(self.settings.health_probe_seconds)

    async def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING, drain in-flight calls for up to `grace` seconds, close the backend."""
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
        self._healthy = False  # strata_server_serving drops with the health status
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self._ready = False
        await self.metrics.close()
        await self.spec.close()

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


async def serve_until_signalled(server: ManagedServer, grace: float) -> None:
    """Start, then stop cleanly on SIGTERM or SIGINT (also while the backend is still opening)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    starting = asyncio.create_task(server.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done() and not stop.is_set():
        if starting.exception() is not None:
            # The backend could not open (a missing model, an unreachable engine): stop what did start.
            stopping.cancel()
            await server.stop(0)
            raise StartupError(str(starting.exception())) from starting.exception()
        await stopping
    elif not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
    log.info("stopping", extra={"grace_seconds": grace})
    try:
        await asyncio.wait_for(server.stop(grace), timeout=grace + 5)
    except TimeoutError:
        log.error("backend did not close in time")
    log.info("stopped")


def run(settings_cls: type[S], make_server: Callable[[S], tuple[ManagedServer, int]]) -> None:
    """Process entry point: load settings (exit 2 naming a bad variable), log, serve until signalled."""
    try:
        settings = load(settings_cls)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if settings.huge_pages():
        memory.restart_with_huge_pages()  # returns where it would not help, or once it has
    logs.configure(settings.log_level, settings.log_format)
    memory.keep_freed_memory(settings.allocator_keep_mib)
    memory.collect_garbage_less_often()
    limits.raise_open_file_limit()

    async def main() -> None:
        server, _port = make_server(settings)
        await serve_until_signalled(server, settings.shutdown_grace_seconds)

    try:
        asyncio.run(main())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except (OSError, StartupError) as exc:
        log.error("cannot start", extra={"error": str(exc)})
        raise SystemExit(1) from None
