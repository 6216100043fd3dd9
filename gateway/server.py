"""Builds the gateway: the gRPC server on the shared runtime, plus REST over the same core."""

from __future__ import annotations

from gateway.app import RagApp
from gateway.auth import Guard, admit_grpc
from gateway.config import GatewaySettings
from gateway.rest.app import create_rest_app
from gateway.rest.serve import RestServer
from gateway.servicer import GatewayServicer
from services.runtime.server import ManagedServer, ServiceSpec
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc

SERVICE = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]


class GatewayServer(ManagedServer):
    """The gateway's ManagedServer; `rest_port` is the bound REST port (0 when REST is off)."""

    app: RagApp
    rest: RestServer | None

    @property
    def rest_port(self) -> int:
        return self.rest.port if self.rest else 0


def create_server(address: str | None = None, settings: GatewaySettings | None = None) -> tuple[GatewayServer, int]:
    settings = settings or GatewaySettings()
    guard = Guard(settings)
    app = RagApp(settings)
    servicer = GatewayServicer(app)
    rest = None
    if settings.rest_listen:
        rest_app = create_rest_app(
            servicer,
            SERVICE,
            max_body_bytes=settings.rest_max_body_bytes,
            guard=lambda request, method: guard.check(
                request.headers.get("authorization"), method, request.client.host if request.client else "?"
            ),
        )
        rest = RestServer(rest_app, settings.rest_listen)

    async def open_all() -> None:
        await app.open()
        if rest is not None:
            await rest.start()

    async def close_all() -> None:
        if rest is not None:
            await rest.stop()
        await app.close()

    spec = ServiceSpec(
        service_names=[SERVICE.full_name],
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        open=open_all,
        probe=app.probe,
        close=close_all,
        admit=admit_grpc(guard),
        gauges=app.figures,
    )
    server = GatewayServer(spec, address or settings.listen, settings)
    server.app, server.rest = app, rest
    return server, server.port
