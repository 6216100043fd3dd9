"""Prometheus metrics for one server: RPC figures from the shared interceptor, backend figures from the layer.

Every `ManagedServer` owns one `ServerMetrics` with its own registry (never the
process-global default, so several servers in one process, as in tests, do not
clash) and serves it at `/metrics` on a side HTTP port with prometheus_client's
own server.

RPC series use the names and labels of go-grpc-prometheus, so stock gRPC
dashboards work, plus `grpc_code` on the histogram (a failed call is usually
much faster or much slower than a good one):

- `grpc_server_started_total{grpc_type, grpc_service, grpc_method}`
- `grpc_server_handled_total{grpc_type, grpc_service, grpc_method, grpc_code}`;
  errors are the series with `grpc_code!="OK"`
- `grpc_server_handling_seconds{grpc_type, grpc_service, grpc_method, grpc_code}`

Backend figures come from `ServiceSpec.gauges`, a cheap synchronous callable
returning e.g. `{"vectors": 1200, "queue_depth": 3}`; it is called on the
server's event loop at scrape time (so it may read loop-owned state) and each
entry is exported as a gauge `strata_backend_<name>`, or as a counter when the
name ends in `_total` (a running count such as `embed_batches_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIServer

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

log = logging.getLogger("strata.metrics")

# No `*_created` twin for every counter and histogram series: Prometheus does not need them.
disable_created_metrics()

Gauges = Callable[[], Mapping[str, float]]

# From a cached lookup (tens of microseconds) to a long generation or stream (minutes).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

# How long a scrape waits for the event loop to evaluate the backend figures.
GAUGES_TIMEOUT_SECONDS = 5.0

_METRIC_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def split_method(full_method: str) -> tuple[str, str]:
    """'/strata.vector.v1.VectorService/Query' -> ('strata.vector.v1.VectorService', 'Query')."""
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


def grpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


class MethodSeries:
    """One method's series; the labelled children are looked up once per status code, then reused."""

    __slots__ = ("_by_code", "_labels", "_metrics", "started")

    def __init__(self, metrics: ServerMetrics, labels: tuple[str, str, str]) -> None:
        self._metrics = metrics
        self._labels = labels
        self._by_code: dict[grpc.StatusCode, tuple[Any, Any]] = {}
        self.started = metrics.started.labels(*labels)

    def finish(self, code: grpc.StatusCode, seconds: float) -> None:
        children = self._by_code.get(code)
        if children is None:
            children = self._by_code[code] = (
                self._metrics.handled.labels(*self._labels, code.name),
                self._metrics.handling.labels(*self._labels, code.name),
            )
        children[0].inc()
        children[1].observe(seconds)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class BackendGauges(Collector):
    """Exports a layer's figures as `strata_backend_<name>`, evaluated at scrape time."""

    def __init__(self, gauges: Gauges) -> None:
        self._gauges = gauges
        self.loop: asyncio.AbstractEventLoop | None = None

    def _evaluate(self) -> Mapping[str, float]:
        loop = self.loop
        if loop is None or loop.is_closed() or _running_loop() is loop:
            return self._gauges()

        async def on_loop() -> Mapping[str, float]:
            return self._gauges()

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result(GAUGES_TIMEOUT_SECONDS)

    def collect(self) -> Iterator[Metric]:
        try:
            figures = dict(self._evaluate())
        except Exception as exc:  # noqa: BLE001 - a broken figure must not break the scrape
            log.warning("backend gauges failed", extra={"error": repr(exc)})
            return
        for name, value in sorted(figures.items()):
            if not _METRIC_NAME.match(name):
                log.warning("backend gauge name is not a metric name", extra={"gauge": name})
                continue
            try:
                number = float(value)
            except (TypeError, ValueError):
                log.warning("backend gauge is not a number", extra={"gauge": name, "value": repr(value)})
                continue
            help_text = f"Backend figure {name!r} reported by the layer."
            if name.endswith("_total"):  # a running count, e.g. batches run: a counter, so rate() applies
                yield CounterMetricFamily(f"strata_backend_{name.removesuffix('_total')}", help_text, number)
            else:
                yield GaugeMetricFamily(f"strata_backend_{name}", help_text, number)


class _Serving(Collector):
    def __init__(self, serving: Callable[[], bool]) -> None:
        self._serving = serving

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "strata_server_serving", "1 while the backend is open and its last probe passed.", float(self._serving())
        )


class ServerMetrics:
    """One server's registry, its RPC series, and the side HTTP server that exposes them."""

    def __init__(self, gauges: Gauges | None = None, serving: Callable[[], bool] | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        method_labels = ("grpc_type", "grpc_service", "grpc_method")
        self.started = Counter(
            "grpc_server_started_total", "RPCs started on the server.", method_labels, registry=self.registry
        )
        self.handled = Counter(
            "grpc_server_handled_total",
            "RPCs completed on the server, by status code.",
            (*method_labels, "grpc_code"),
            registry=self.registry,
        )
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, by status code.",
            (*method_labels, "grpc_code"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend: BackendGauges | None = None
        if gauges is not None:
            self.backend = BackendGauges(gauges)
            self.registry.register(self.backend)
        if serving is not None:
            self.registry.register(_Serving(serving))
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        self._methods: dict[tuple[str, str], MethodSeries] = {}

    def start_call(self, full_method: str, kind: str) -> MethodSeries:
        """Count a started RPC; the returned series records how it ended."""
        series = self._methods.get((full_method, kind))
        if series is None:
            series = self._methods[(full_method, kind)] = MethodSeries(self, (kind, *split_method(full_method)))
        series.started.inc()
        return series

    # -- the /metrics endpoint ---------------------------------------------------------------

    @property
    def port(self) -> int | None:
        """The bound HTTP port while serving, else None."""
        return int(self._http[0].server_port) if self._http else None

    def serve(self, host: str, port: int, certfile: str = "", keyfile: str = "") -> int:
        """Serve /metrics on host:port (0 picks a free port), over HTTPS when given a certificate."""
        if self.backend is not None:
            self.backend.loop = asyncio.get_running_loop()
        self._http = start_http_server(
            port, addr=host, registry=self.registry, certfile=certfile or None, keyfile=keyfile or None
        )
        return int(self._http[0].server_port)

    async def close(self) -> None:
        """Stop serving /metrics; returns once the port is released."""
        if self._http is None:
            return
        httpd, thread = self._http
        self._http = None
        # shutdown() waits for serve_forever to notice, which polls every 0.5 s; a connection wakes
        # it at once, so stopping a server (hundreds of times in the test suite) stays fast.
        stopping = asyncio.ensure_future(asyncio.to_thread(httpd.shutdown))
        while not stopping.done():
            await asyncio.to_thread(_wake, httpd.server_address)
            await asyncio.wait({stopping}, timeout=0.05)
        httpd.server_close()
        await asyncio.to_thread(thread.join, 5)


def _wake(address: tuple[Any, ...]) -> None:
    host, port = address[0], address[1]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        pass


def metrics_address(grpc_address: str, bound_port: int, offset: int) -> tuple[str, int] | None:
    """Where to serve metrics for a gRPC server: its host, at its port + offset; port 0 stays 0.

    None when metrics are off (offset 0) or the address has no TCP host (unix sockets).
    """
    if offset <= 0 or grpc_address.startswith("unix:"):
        return None
    host, sep, requested = grpc_address.rpartition(":")
    if not sep or not host:
        return None
    host = host.strip("[]")
    if requested.strip() == "0":
        return host, 0
    port = bound_port + offset
    if port > 65535:
        raise ValueError(f"metrics port {bound_port} + STRATA_METRICS_PORT_OFFSET {offset} exceeds 65535")
    return host, port
