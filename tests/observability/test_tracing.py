"""OpenTelemetry tracing: off by default; when on, one trace from a client through a server that calls another."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.runtime import tracing
from services.runtime.errors import NotFound
from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import ConfigError, RuntimeSettings
from strata.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.support.servers import serve_in_thread

VECTOR = "strata.vector.v1.VectorService"
# A W3C trace context a caller would send; a traced server continues this trace.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with tracing.using(provider):
        yield exporter
    provider.shutdown()


class Layer(vector_pb2_grpc.VectorServiceServicer):
    """GetIndex answers itself, or (like the gateway) asks the layer at `upstream` over a traced channel."""

    def __init__(self, upstream: str | None = None) -> None:
        self.upstream = upstream
        self.saw_trace: list[bool] = []

    async def GetIndex(self, request, context):  # type: ignore[no-untyped-def]
        self.saw_trace.append(trace.get_current_span().get_span_context().is_valid)
        if self.upstream is not None:
            async with grpc.aio.insecure_channel(self.upstream, interceptors=tracing.client_interceptors()) as channel:
                return await vector_pb2_grpc.VectorServiceStub(channel).GetIndex(request)
        if request.name == "boom":
            raise RuntimeError("a bug")
        if request.name != "docs":
            raise NotFound(f"index {request.name!r} does not exist", reason="INDEX_NOT_FOUND")
        return vector_pb2.GetIndexResponse(index=vector_pb2.Index(name=request.name))


class Exporter(metadata_pb2_grpc.MetadataServiceServicer):
    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        for _ in range(5):
            yield metadata_pb2.ExportResponse()


def layer_server(servicer: Layer):  # type: ignore[no-untyped-def]
    def register(server: grpc.aio.Server) -> None:
        vector_pb2_grpc.add_VectorServiceServicer_to_server(servicer, server)
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(Exporter(), server)

    def make():  # type: ignore[no-untyped-def]
        spec = ServiceSpec(service_names=[VECTOR], register=register)
        server = ManagedServer(spec, "127.0.0.1:0", RuntimeSettings(metrics_port_offset=0))
        return server, server.port

    return make


async def call(address: str, name: str, metadata: tuple[tuple[str, str], ...] = ()) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address, interceptors=tracing.client_interceptors()) as channel:
        try:
            await vector_pb2_grpc.VectorServiceStub(channel).GetIndex(
                vector_pb2.GetIndexRequest(name=name), metadata=metadata
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        return grpc.StatusCode.OK


def finished(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    # Client spans end in a done-callback, a moment after the caller has its answer.
    deadline = time.monotonic() + 10
    while len(exporter.get_finished_spans()) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return list(exporter.get_finished_spans())


def test_one_trace_from_client_through_gateway_like_server_to_layer(spans: InMemorySpanExporter) -> None:
    layer = Layer()
    with serve_in_thread(layer_server(layer)) as layer_address:
        front = Layer(upstream=layer_address)
        with serve_in_thread(layer_server(front)) as front_address:
            assert asyncio.run(call(front_address, "docs")) == grpc.StatusCode.OK
            got = finished(spans, 4)

    assert front.saw_trace == [True] and layer.saw_trace == [True]
    assert len(got) == 4, [s.name for s in got]  # health checks are not traced
    assert {s.name for s in got} == {"/strata.vector.v1.VectorService/GetIndex"}
    assert len({s.context.trace_id for s in got}) == 1
    kinds = sorted(s.kind.name for s in got)
    assert kinds == ["CLIENT", "CLIENT", "SERVER", "SERVER"]
    # Each span's parent is the one before it: client -> front server -> its client -> layer server.
    by_id = {s.context.span_id: s for s in got}
    roots = [s for s in got if s.parent is None]
    assert len(roots) == 1 and roots[0].kind is trace.SpanKind.CLIENT
    depth = {s.context.span_id: 0 for s in roots}
    for _ in range(4):
        for s in got:
            if s.parent is not None and s.parent.span_id in depth:
                depth[s.context.span_id] = depth[s.parent.span_id] + 1
    assert sorted(depth.values()) == [0, 1, 2, 3]
    assert all(by_id[sid].attributes["rpc.grpc.status_code"] == 0 for sid in by_id)  # type: ignore[index]


def test_server_continues_the_callers_trace_and_marks_errors(spans: InMemorySpanExporter) -> None:
    layer = Layer()
    with serve_in_thread(layer_server(layer)) as address, grpc.insecure_channel(address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        for name, code in (("missing", grpc.StatusCode.NOT_FOUND), ("boom", grpc.StatusCode.INTERNAL)):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetIndex(vector_pb2.GetIndexRequest(name=name), metadata=(("traceparent", TRACEPARENT),))
            assert caught.value.code() == code
        got = finished(spans, 2)
    assert [s.kind for s in got] == [trace.SpanKind.SERVER] * 2
    for span in got:
        assert f"{span.context.trace_id:032x}" == TRACEPARENT.split("-")[1]
        assert span.parent is not None and f"{span.parent.span_id:016x}" == TRACEPARENT.split("-")[2]
    missing, boom = got
    # The code the shared interceptor mapped is on the span; per the semantic conventions a server
    # span is an error only for server-side codes, not for the caller's NOT_FOUND.
    assert missing.attributes is not None and missing.attributes["rpc.grpc.status_code"] == 5
    assert missing.status.status_code is trace.StatusCode.UNSET
    assert boom.attributes is not None and boom.attributes["rpc.grpc.status_code"] == 13
    assert boom.status.status_code is trace.StatusCode.ERROR


def test_streams_through_traced_channels_read_whole_or_cancelled(spans: InMemorySpanExporter) -> None:
    async def read(address: str, limit: int | None) -> int:
        # As gateway/upstreams.py reads a server stream: iterate, then cancel in `finally`.
        async with grpc.aio.insecure_channel(address, interceptors=tracing.client_interceptors()) as channel:
            call = metadata_pb2_grpc.MetadataServiceStub(channel).Export(metadata_pb2.ExportRequest())
            seen = 0
            try:
                async for _ in call:
                    seen += 1
                    if seen == limit:
                        break
            finally:
                call.cancel()
            return seen

    with serve_in_thread(layer_server(Layer())) as address:
        assert asyncio.run(read(address, None)) == 5
        assert asyncio.run(read(address, 2)) == 2
        got = finished(spans, 4)
    assert sorted(s.kind.name for s in got) == ["CLIENT", "CLIENT", "SERVER", "SERVER"]
    assert len({s.context.trace_id for s in got}) == 2


def test_rest_request_and_the_layer_calls_it_makes_share_one_trace(spans: InMemorySpanExporter) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    layer = Layer()
    with serve_in_thread(layer_server(layer)) as address:

        async def get_index(request: Request) -> JSONResponse:
            return JSONResponse({"code": (await call(address, request.path_params["name"])).name})

        app = tracing.asgi_middleware(Starlette(routes=[Route("/v1/indexes/{name}", get_index)]))
        with TestClient(app) as client:
            reply = client.get("/v1/indexes/docs", headers={"traceparent": TRACEPARENT})
        assert reply.json() == {"code": "OK"}
        got = finished(spans, 3)
    assert layer.saw_trace == [True]
    assert {f"{s.context.trace_id:032x}" for s in got} == {TRACEPARENT.split("-")[1]}
    kinds = [s.kind.name for s in got if s.name.endswith("GetIndex") or s.kind is trace.SpanKind.SERVER]
    assert sorted(kinds) == ["CLIENT", "SERVER", "SERVER"]  # HTTP server, gRPC client, layer's gRPC server


def test_tracing_is_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_provider", tracing._UNSET)  # as in a fresh process
    global_provider = trace.get_tracer_provider()
    assert tracing.client_interceptors() == []
    app = object()
    assert tracing.asgi_middleware(app) is app
    layer = Layer()
    with serve_in_thread(layer_server(layer)) as address:
        assert tracing._provider is None  # the server read the environment and found nothing to do
        assert tracing.server_interceptors() == []
        assert asyncio.run(call(address, "docs", metadata=(("traceparent", TRACEPARENT),))) == grpc.StatusCode.OK
    # No interceptor: the caller's trace context is not even read.
    assert layer.saw_trace == [False]
    assert trace.get_tracer_provider() is global_provider  # nothing installed globally


def test_environment_switches() -> None:
    assert tracing.exporter_names({}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp, console"}) == ["otlp", "console"]
    assert tracing.exporter_names({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}) == ["otlp"]
    assert tracing.exporter_names({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) == []
    with pytest.raises(ConfigError, match="OTEL_TRACES_EXPORTER"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert tracing.from_environment("strata-vector", {}) is None


def test_provider_from_environment_names_the_service() -> None:
    provider = tracing.from_environment("strata-vector", {"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    assert provider.resource.attributes["service.name"] == "strata-vector"
    provider.shutdown()
    env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SERVICE_NAME": "vector-eu-1"}
    provider = tracing.from_environment("strata-vector", env)
    assert provider is not None and provider.resource.attributes["service.name"] == "vector-eu-1"
    provider.shutdown()
    assert tracing.default_service_name(["strata.gateway.v1.GatewayService"]) == "strata-gateway"
