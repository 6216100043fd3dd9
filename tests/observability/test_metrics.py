"""Prometheus metrics: real servers on port 0, real calls, /metrics scraped over HTTP."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from collections.abc import Mapping

import grpc
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.runtime.errors import NotFound
from services.runtime.metrics import metrics_address
from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import RuntimeSettings
from strata.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.support.servers import free_port, serve_in_thread

VECTOR = "strata.vector.v1.VectorService"
METADATA = "strata.metadata.v1.MetadataService"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class ToyVector(vector_pb2_grpc.VectorServiceServicer):
    async def GetIndex(self, request, context):  # type: ignore[no-untyped-def]
        if request.name == "slow":
            await asyncio.sleep(0.3)
        elif request.name != "docs":
            raise NotFound(f"index {request.name!r} does not exist", reason="INDEX_NOT_FOUND")
        return vector_pb2.GetIndexResponse(index=vector_pb2.Index(name=request.name))


class ToyMetadata(metadata_pb2_grpc.MetadataServiceServicer):
    async def Export(self, request, context):  # type: ignore[no-untyped-def]
        for _ in range(3):
            yield metadata_pb2.ExportResponse()


def toy_server(gauges=None, settings: RuntimeSettings | None = None, address: str = "127.0.0.1:0"):  # type: ignore[no-untyped-def]
    def register(server: grpc.aio.Server) -> None:
        vector_pb2_grpc.add_VectorServiceServicer_to_server(ToyVector(), server)
        metadata_pb2_grpc.add_MetadataServiceServicer_to_server(ToyMetadata(), server)

    spec = ServiceSpec(service_names=[VECTOR, METADATA], register=register, gauges=gauges)
    server = ManagedServer(spec, address, settings or RuntimeSettings())
    return server, server.port


class Started:
    """serve_in_thread, keeping the ManagedServer so the test can ask for its metrics port."""

    def __init__(self, **kwargs: object) -> None:
        self.kwargs = kwargs
        self.server: ManagedServer | None = None

    def __call__(self):  # type: ignore[no-untyped-def]
        self.server, port = toy_server(**self.kwargs)  # type: ignore[arg-type]
        return self.server, port

    @property
    def metrics_port(self) -> int:
        assert self.server is not None and self.server.metrics_port is not None
        return self.server.metrics_port


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def rpc_labels(method: str, service: str = VECTOR, kind: str = "unary") -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}


def test_rpc_counts_latency_and_errors_by_method_and_code() -> None:
    started = Started()
    with serve_in_thread(started) as address, grpc.insecure_channel(address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        stub.GetIndex(vector_pb2.GetIndexRequest(name="docs"))
        stub.GetIndex(vector_pb2.GetIndexRequest(name="slow"))
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetIndex(vector_pb2.GetIndexRequest(name="missing"))
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError):
            stub.Query(vector_pb2.QueryRequest())  # not implemented by the toy
        assert len(list(metadata_pb2_grpc.MetadataServiceStub(channel).Export(metadata_pb2.ExportRequest()))) == 3
        text, samples = scrape(started.metrics_port)

    get_index = rpc_labels("GetIndex")
    assert value(samples, "grpc_server_started_total", **get_index) == 5
    assert value(samples, "grpc_server_handled_total", **get_index, grpc_code="OK") == 2
    assert value(samples, "grpc_server_handled_total", **get_index, grpc_code="NOT_FOUND") == 3
    assert value(samples, "grpc_server_handled_total", **rpc_labels("Query"), grpc_code="UNIMPLEMENTED") == 1
    export = rpc_labels("Export", METADATA, "server_stream")
    assert value(samples, "grpc_server_handled_total", **export, grpc_code="OK") == 1

    # Latency histogram: the fast call lands in a low bucket, the 0.3 s one only from le=0.5 up.
    ok = {**get_index, "grpc_code": "OK"}
    assert value(samples, "grpc_server_handling_seconds_count", **ok) == 2
    assert value(samples, "grpc_server_handling_seconds_sum", **ok) >= 0.3
    assert value(samples, "grpc_server_handling_seconds_bucket", **ok, le="0.25") == 1
    assert value(samples, "grpc_server_handling_seconds_bucket", **ok, le="0.5") == 2
    assert value(samples, "grpc_server_handling_seconds_bucket", **ok, le="+Inf") == 2
    not_found = {**get_index, "grpc_code": "NOT_FOUND"}
    assert value(samples, "grpc_server_handling_seconds_bucket", **not_found, le="+Inf") == 3

    assert value(samples, "strata_server_serving") == 1
    assert "process_cpu_seconds_total" in text  # the process collectors are on the server's own registry


def test_backend_gauges_are_read_on_the_event_loop_at_scrape_time() -> None:
    figures = {"vectors": 3.0}
    on_loop: list[bool] = []

    def gauges() -> Mapping[str, float]:
        asyncio.get_running_loop()  # raises off the loop: layers may read loop-owned state here
        on_loop.append(True)
        odd = {"not a name": 1, "bad_value": "x"}
        return {**figures, "queue_depth": 2, "embed_batches_total": 7, **odd}  # type: ignore[dict-item]

    started = Started(gauges=gauges)
    with serve_in_thread(started):
        _, first = scrape(started.metrics_port)
        figures["vectors"] = 1200.0
        text, second = scrape(started.metrics_port)
    assert on_loop
    assert value(first, "strata_backend_vectors") == 3
    assert value(second, "strata_backend_vectors") == 1200
    assert value(second, "strata_backend_queue_depth") == 2
    assert "# TYPE strata_backend_vectors gauge" in text
    assert re.search(r"^# TYPE strata_backend_embed_batches(_total)? counter$", text, re.M)
    assert value(second, "strata_backend_embed_batches_total") == 7
    assert "not a name" not in text and "strata_backend_bad_value" not in text


def test_a_failing_gauge_does_not_break_the_scrape() -> None:
    def gauges() -> Mapping[str, float]:
        raise RuntimeError("backend busy")

    started = Started(gauges=gauges)
    with serve_in_thread(started) as address, grpc.insecure_channel(address) as channel:
        vector_pb2_grpc.VectorServiceStub(channel).GetIndex(vector_pb2.GetIndexRequest(name="docs"))
        text, samples = scrape(started.metrics_port)
    assert "strata_backend_" not in text
    assert value(samples, "grpc_server_handled_total", **rpc_labels("GetIndex"), grpc_code="OK") == 1


def test_servers_in_one_process_keep_separate_registries() -> None:
    first, second = Started(), Started()
    with serve_in_thread(first) as address, serve_in_thread(second), grpc.insecure_channel(address) as channel:
        vector_pb2_grpc.VectorServiceStub(channel).GetIndex(vector_pb2.GetIndexRequest(name="docs"))
        assert first.metrics_port != second.metrics_port
        _, mine = scrape(first.metrics_port)
        _, theirs = scrape(second.metrics_port)
    assert value(mine, "grpc_server_handled_total", **rpc_labels("GetIndex"), grpc_code="OK") == 1
    assert value(theirs, "grpc_server_handled_total", **rpc_labels("GetIndex"), grpc_code="OK") == 0


def test_metrics_port_is_grpc_port_plus_offset() -> None:
    ports = {free_port() for _ in range(3)}
    grpc_port, metrics_port = min(ports), max(ports)
    settings = RuntimeSettings(metrics_port_offset=metrics_port - grpc_port)
    started = Started(settings=settings, address=f"127.0.0.1:{grpc_port}")
    with serve_in_thread(started):
        assert started.metrics_port == metrics_port
        scrape(metrics_port)
    with pytest.raises(OSError):  # stopped with the server
        scrape(metrics_port)


def test_offset_zero_turns_metrics_off() -> None:
    started = Started(settings=RuntimeSettings(metrics_port_offset=0))
    with serve_in_thread(started):
        assert started.server is not None and started.server.metrics_port is None


def test_metrics_address_scheme() -> None:
    assert metrics_address("0.0.0.0:50052", 50052, 1000) == ("0.0.0.0", 51052)
    assert metrics_address("127.0.0.1:50050", 50050, 1000) == ("127.0.0.1", 51050)
    assert metrics_address("[::]:50053", 50053, 1000) == ("::", 51053)
    assert metrics_address("localhost:0", 41234, 1000) == ("localhost", 0)  # tests: any free port
    assert metrics_address("127.0.0.1:50052", 50052, 0) is None
    assert metrics_address("unix:/tmp/strata.sock", 1, 1000) is None
    with pytest.raises(ValueError):
        metrics_address("127.0.0.1:65000", 65000, 1000)


def test_backend_gauges_are_not_asked_before_the_backend_opens() -> None:
    calls: list[int] = []

    def gauges() -> Mapping[str, float]:
        calls.append(1)
        return {"vectors": 1}

    async def before_start() -> str:
        server, _ = toy_server(gauges=gauges)
        text = generate_latest(server.metrics.registry).decode()
        await server.stop(0)
        return text

    text = asyncio.run(before_start())
    assert calls == [] and "strata_backend_" not in text
    assert "strata_server_serving 0.0" in text
