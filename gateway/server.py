"""Builds the gateway's gRPC server on the shared runtime."""

from __future__ import annotations

from gateway.app import RagApp
from gateway.config import GatewaySettings
from gateway.servicer import GatewayServicer
from services.runtime.server import ManagedServer, ServiceSpec
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


def create_server(address: str | None = None, settings: GatewaySettings | None = None) -> tuple[ManagedServer, int]:
    settings = settings or GatewaySettings()
    app = RagApp(settings)
    spec = ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(GatewayServicer(app), server),
        open=app.open,
        probe=app.probe,
        close=app.close,
    )
    server = ManagedServer(spec, address or settings.listen, settings)
    server.app = app  # type: ignore[attr-defined]  # the REST adapter serves the same core
    return server, server.port
