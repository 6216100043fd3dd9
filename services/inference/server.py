"""Builds the inference gRPC server: `create_server(address, settings) -> (server, port)`."""

from __future__ import annotations

from services.inference.backends.base import InferenceBackend
from services.inference.config import InferenceSettings
from services.inference.core import InferenceCore
from services.inference.servicer import InferenceServicer
from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import load
from strata.inference.v1 import inference_pb2, inference_pb2_grpc

SERVICE_NAME = inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name


def make_backend(settings: InferenceSettings) -> InferenceBackend:
    if settings.backend == "openai":
        from services.inference.backends.openai import OpenAIBackend

        return OpenAIBackend(settings)
    from services.inference.backends.local import LocalBackend

    return LocalBackend(settings)


def create_server(address: str | None = None, settings: InferenceSettings | None = None) -> tuple[ManagedServer, int]:
    settings = settings or load(InferenceSettings)
    core = InferenceCore(settings, make_backend(settings))
    spec = ServiceSpec(
        service_names=(SERVICE_NAME,),
        register=lambda server: inference_pb2_grpc.add_InferenceServiceServicer_to_server(
            InferenceServicer(core), server
        ),
        open=core.open,
        probe=core.probe,
        close=core.close,
        gauges=core.gauges,
    )
    server = ManagedServer(spec, address or settings.listen, settings)
    return server, server.port
