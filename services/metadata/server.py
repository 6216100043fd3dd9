"""Builds the metadata gRPC server on the shared runtime."""

from __future__ import annotations

from services.metadata.backends.base import MetadataBackend
from services.metadata.config import MetadataSettings
from services.metadata.core import MetadataCore
from services.metadata.servicer import MetadataServicer
from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import load
from strata.metadata.v1 import metadata_pb2, metadata_pb2_grpc

SERVICE_NAME = metadata_pb2.DESCRIPTOR.services_by_name["MetadataService"].full_name


def make_backend(settings: MetadataSettings) -> MetadataBackend:
    if settings.backend == "postgres":
        from services.metadata.backends.postgres import PostgresBackend

        return PostgresBackend(settings)
    from services.metadata.backends.sqlite import SqliteBackend

    return SqliteBackend(settings)


def create_server(address: str | None = None, settings: MetadataSettings | None = None) -> tuple[ManagedServer, int]:
    settings = settings or load(MetadataSettings)
    backend = make_backend(settings)
    core = MetadataCore(backend, settings)
    servicer = MetadataServicer(core)
    spec = ServiceSpec(
        service_names=[SERVICE_NAME],
        register=lambda server: metadata_pb2_grpc.add_MetadataServiceServicer_to_server(servicer, server),
        open=backend.open,
        probe=backend.probe,
        close=backend.close,
    )
    server = ManagedServer(spec, address or settings.listen, settings)
    return server, server.port
