"""The shared server runtime: error mapping, readiness, health, reflection, access log, graceful stop.

A small real servicer (of the vector contract) runs on the runtime over a real channel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import RuntimeSettings
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.support.servers import serve_in_thread

SERVICE = "strata.vector.v1.VectorService"


class ToyServicer(vector_pb2_grpc.VectorServiceServicer):
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def GetIndex(self, request, context):  # type: ignore[no-untyped-def]
        if request.name == "slow":
            await asyncio.sleep(0.5)
            return vector_pb2.GetIndexResponse(index=vector_pb2.Index(name="slow"))
        raise NotFound(
            f"index {request.name!r} does not exist", reason="INDEX_NOT_FOUND", metadata={"index": request.name}
        )

    async def CreateIndex(self, request, context):  # type: ignore[no-untyped-def]
        raise RuntimeError("secret internal detail")

    async def ListVectors(self, request, context):  # type: ignore[no-untyped-def]
        raise InvalidArgument("page_token is malformed", reason="BAD_PAGE_TOKEN")


def make_server(open_gate: threading.Event | None = None, healthy: list[bool] | None = None):  # type: ignore[no-untyped-def]
    async def open_backend() -> None:
        while open_gate is not None and not open_gate.is_set():
            await asyncio.sleep(0.01)

    async def probe() -> bool:
        return healthy[0] if healthy else True

    spec = ServiceSpec(
        service_names=[SERVICE],
        register=lambda s: vector_pb2_grpc.add_VectorServiceServicer_to_server(ToyServicer(), s),
        open=open_backend,
        probe=probe,
    )
    server = ManagedServer(spec, "127.0.0.1:0", RuntimeSettings(health_probe_seconds=0.05))
    return server, server.port


def error_info(exc: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(exc)  # type: ignore[arg-type]
    assert status is not None and status.details
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def test_domain_error_becomes_status_with_error_info() -> None:
    with serve_in_thread(make_server) as address, grpc.insecure_channel(address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetIndex(vector_pb2.GetIndexRequest(name="docs"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details() == "index 'docs' does not exist"
        info = error_info(caught.value)
        assert (info.reason, info.domain, dict(info.metadata)) == ("INDEX_NOT_FOUND", "strata.dev", {"index": "docs"})
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListVectors(vector_pb2.ListVectorsRequest())
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_unexpected_exception_is_internal_with_generic_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="strata.errors")
    with serve_in_thread(make_server) as address, grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            vector_pb2_grpc.VectorServiceStub(channel).CreateIndex(vector_pb2.CreateIndexRequest(name="x"))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (caught.value.details() or "")
    assert any("secret internal detail" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_unimplemented_rpc_is_unimplemented() -> None:
    with serve_in_thread(make_server) as address, grpc.insecure_channel(address) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            vector_pb2_grpc.VectorServiceStub(channel).Query(vector_pb2.QueryRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_access_log_has_one_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="strata.access")
    with serve_in_thread(make_server) as address, grpc.insecure_channel(address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        with pytest.raises(grpc.RpcError):
            stub.GetIndex(vector_pb2.GetIndexRequest(name="a"))
        stub.GetIndex(vector_pb2.GetIndexRequest(name="slow"))
    lines = [r for r in caplog.records if r.name == "strata.access" and getattr(r, "method", "").endswith("GetIndex")]
    assert [r.code for r in lines] == ["NOT_FOUND", "OK"]  # type: ignore[attr-defined]
    assert all(r.duration_ms >= 0 for r in lines)  # type: ignore[attr-defined]
    assert lines[1].duration_ms >= 400  # type: ignore[attr-defined]


def test_health_is_not_serving_until_backend_opens_and_calls_are_gated() -> None:
    gate = threading.Event()
    loop = asyncio.new_event_loop()
    server, port = None, 0

    def run() -> None:
        nonlocal server, port
        asyncio.set_event_loop(loop)
        server, port = make_server(open_gate=gate)
        loop.run_until_complete(server.start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not port:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5, wait_for_ready=True)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as caught:
                vector_pb2_grpc.VectorServiceStub(channel).GetIndex(vector_pb2.GetIndexRequest(name="slow"))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting" in (caught.value.details() or "")
            gate.set()
            while health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status != 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        gate.set()
        if server is not None:
            asyncio.run_coroutine_threadsafe(server.stop(0), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_health_follows_the_backend_probe() -> None:
    healthy = [True]
    with serve_in_thread(lambda: make_server(healthy=healthy)) as address, grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        def status() -> int:
            return health.Check(health_pb2.HealthCheckRequest(service=SERVICE)).status

        assert status() == health_pb2.HealthCheckResponse.SERVING
        healthy[0] = False
        deadline = time.monotonic() + 5
        while status() != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        healthy[0] = True
        while status() != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_reflection_lists_service_and_health() -> None:
    with serve_in_thread(make_server) as address, grpc.insecure_channel(address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_stop_drains_in_flight_calls() -> None:
    results: list[object] = []
    with serve_in_thread(make_server, grace=5.0) as address:
        channel = grpc.insecure_channel(address)
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        future = stub.GetIndex.future(vector_pb2.GetIndexRequest(name="slow"))
        time.sleep(0.1)  # the call is in flight when the server is told to stop
    results.append(future.result(timeout=5))
    channel.close()
    assert results[0].index.name == "slow"  # type: ignore[attr-defined]


def test_a_backend_that_cannot_open_stops_the_server_with_a_startup_error() -> None:
    from services.runtime.errors import FailedPrecondition
    from services.runtime.server import StartupError, serve_until_signalled

    async def broken_open() -> None:
        raise FailedPrecondition("model file missing: pip install the-model-package")

    async def scenario() -> int:
        spec = ServiceSpec(
            service_names=[SERVICE],
            register=lambda s: vector_pb2_grpc.add_VectorServiceServicer_to_server(ToyServicer(), s),
            open=broken_open,
        )
        server = ManagedServer(spec, "127.0.0.1:0", RuntimeSettings(metrics_port_offset=0))
        with pytest.raises(StartupError, match="the-model-package"):
            await serve_until_signalled(server, grace=1)
        return server.port

    port = asyncio.run(scenario())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
