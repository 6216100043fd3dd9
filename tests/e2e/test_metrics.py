"""The gateway's /metrics: RPC counters by method and code, and its own backend figures."""

from __future__ import annotations

import httpx
import pytest

from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.stack import Stack


def test_gateway_metrics_count_calls_and_show_upstream_figures(
    stack: Stack, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    import grpc

    with pytest.raises(grpc.RpcError):
        gateway.GetCollection(gateway_pb2.GetCollectionRequest(name="metrics-missing"))
    text = httpx.get(stack.gateway_metrics, timeout=10).text
    assert 'grpc_method="GetCollection"' in text and 'grpc_code="NOT_FOUND"' in text
    for layer in ("inference", "vector", "metadata", "blob"):
        assert f"strata_backend_upstream_{layer}_in_flight" in text
    assert "strata_backend_ingests_in_flight" in text
