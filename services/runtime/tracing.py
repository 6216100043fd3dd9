"""OpenTelemetry tracing across the gateway and the layers, off unless the standard OTEL_* variables turn it on.

Turned on by `OTEL_TRACES_EXPORTER` (`console`, `otlp`, or both comma-separated;
`none` keeps it off) or, as a shorthand for `otlp`, by `OTEL_EXPORTER_OTLP_ENDPOINT`
/ `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; `OTEL_SDK_DISABLED=true` wins over both.
The rest is the SDK's own: `OTEL_SERVICE_NAME` (default `strata-<layer>`),
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER[_ARG]`, `OTEL_PROPAGATORS`
(W3C tracecontext + baggage), `OTEL_EXPORTER_OTLP_*` (endpoint, headers,
`..._PROTOCOL=grpc|http/protobuf`), `OTEL_PYTHON_GRPC_EXCLUDED_SERVICES`.

Servers get a span per call from `server_interceptors()` (the runtime installs it
outermost); clients that dial layers add `client_interceptors()` to their
channels, which puts the trace context in the call's metadata; an HTTP front end
(the gateway's REST app) is wrapped in `asgi_middleware(app)`. Health checks and
reflection are never traced. When tracing is off neither installs anything, and
OpenTelemetry is not even imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from services.runtime.settings import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("strata.tracing")

EXPORTERS = ("console", "otlp")
_UNTRACED_SERVICE_PREFIXES = ("grpc.health.v1.", "grpc.reflection.")

_UNSET: Any = object()
# The provider this process traces with: _UNSET until set up, None when tracing is off.
_provider: Any = _UNSET


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The span exporters the environment asks for; empty means tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = environ.get("OTEL_TRACES_EXPORTER")
    if raw is None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    if names in ([], ["none"]):
        return []
    unknown = [name for name in names if name not in EXPORTERS]
    if unknown:
        raise ConfigError(f"OTEL_TRACES_EXPORTER={raw!r}: expected none or any of {', '.join(EXPORTERS)}")
    return names


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    return bool(exporter_names(os.environ if environ is None else environ))


def default_service_name(service_names: Sequence[str]) -> str:
    """'strata.vector.v1.VectorService' -> 'strata-vector'."""
    for full_name in service_names:
        parts = full_name.split(".")
        if len(parts) >= 3 and parts[0] == "strata":
            return f"strata-{parts[1]}"
    return "strata"


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            return OTLPSpanExporter()
        if protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as OTLPHttpSpanExporter,
            )

            return OTLPHttpSpanExporter()
    except ImportError as exc:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER=otlp over {protocol} needs the package that provides {exc.name}"
        ) from None
    raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: expected grpc or http/protobuf")


def from_environment(service_name: str = "strata", environ: Mapping[str, str] | None = None) -> TracerProvider | None:
    """A tracer provider exporting as the environment says, or None when tracing is off."""
    environ = os.environ if environ is None else environ
    names = exporter_names(environ)
    if not names:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ConfigError(f"OTEL_TRACES_EXPORTER: tracing needs opentelemetry-sdk ({exc})") from None
    # Explicit attributes win over OTEL_RESOURCE_ATTRIBUTES; OTEL_SERVICE_NAME wins over our default.
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "").strip() or service_name})
    provider = TracerProvider(resource=resource)
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, environ)))
    return provider


def setup(service_name: str = "strata") -> TracerProvider | None:
    """Once per process: the provider from the environment, installed as OpenTelemetry's global one."""
    global _provider
    if _provider is _UNSET:
        provider = from_environment(service_name)
        if provider is not None:
            from opentelemetry import trace

            trace.set_tracer_provider(provider)
            log.info("tracing on", extra={"exporters": exporter_names(os.environ), "service_name": service_name})
        _provider = provider
    return _provider  # type: ignore[no-any-return]


@contextlib.contextmanager
def using(provider: TracerProvider | None) -> Iterator[None]:
    """Trace with `provider` (None: not at all) instead of the environment's, e.g. in tests."""
    global _provider
    previous, _provider = _provider, provider
    try:
        yield
    finally:
        _provider = previous


def _traced() -> Any:
    from opentelemetry.instrumentation.grpc.filters import any_of, negate, service_name, service_prefix

    excluded = os.environ.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "")
    conditions = [service_prefix(prefix) for prefix in _UNTRACED_SERVICE_PREFIXES]
    conditions += [service_name(name.strip()) for name in excluded.split(",") if name.strip()]
    return negate(any_of(*conditions))


def server_interceptors(service_name: str = "strata") -> list[grpc.aio.ServerInterceptor]:
    """For a grpc.aio server: one span per call, continuing the caller's trace; [] when tracing is off."""
    provider = setup(service_name)
    if provider is None:
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(tracer_provider=provider, filter_=_traced())]


def _caller_provider() -> tuple[bool, TracerProvider | None]:
    """(on, provider) for code that may run before the process's server set tracing up.

    Before `setup`, spans go through OpenTelemetry's global provider, which `setup` installs.
    """
    if _provider is _UNSET:
        return enabled(), None
    return _provider is not None, _provider


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """For a grpc.aio channel: one span per call, its context sent in the metadata; [] when tracing is off."""
    on, provider = _caller_provider()
    if not on:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    return list(aio_client_interceptors(tracer_provider=provider, filter_=_traced()))


def asgi_middleware(app: Any) -> Any:
    """`app` with a server span per HTTP request (continuing a caller's `traceparent`); `app` itself when off."""
    on, provider = _caller_provider()
    if not on:
        return app
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    # One span per request, not one more per body chunk sent or received.
    return OpenTelemetryMiddleware(app, tracer_provider=provider, exclude_spans=["receive", "send"])
