"""Builds the vector gRPC server: servicer, backend lifecycle, health and reflection."""

from __future__ import annotations

import grpc

from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import load
from services.vector.backends.base import VectorBackend
from services.vector.config import VectorSettings
from services.vector.core import VectorCore
from services.vector.model import HnswParams
from services.vector.servicer import VectorServicer
from strata.vector.v1 import vector_pb2, vector_pb2_grpc

SERVICE_NAME = vector_pb2.DESCRIPTOR.services_by_name["VectorService"].full_name


def create_backend(settings: VectorSettings) -> VectorBackend:
    if settings.backend == "milvus":
        from services.vector.backends.milvus import MilvusBackend

        return MilvusBackend(settings)
    from services.vector.backends.faiss import FaissBackend

    return FaissBackend(settings)


def create_server(address: str | None = None, settings: VectorSettings | None = None) -> tuple[ManagedServer, int]:
    settings = settings or load(VectorSettings)
    backend = create_backend(settings)
    hnsw = HnswParams(settings.hnsw_m, settings.hnsw_ef_construction, settings.hnsw_ef_search)
    servicer = VectorServicer(VectorCore(backend), hnsw)

    def register(server: grpc.aio.Server) -> None:
        vector_pb2_grpc.add_VectorServiceServicer_to_server(servicer, server)

    spec = ServiceSpec(
        service_names=(SERVICE_NAME,),
        register=register,
        open=backend.open,
        probe=backend.healthy,
        close=backend.close,
    )
    server = ManagedServer(spec, address or settings.listen, settings)
    return server, server.port
