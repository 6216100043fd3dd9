"""Builds the blob gRPC server: settings -> backend -> store -> servicer, on the shared runtime."""

from __future__ import annotations

from services.blob.backends.base import BlobBackend
from services.blob.config import BlobSettings
from services.blob.servicer import register
from services.blob.store import BlobStore
from services.runtime.server import ManagedServer, ServiceSpec
from services.runtime.settings import load
from strata.blob.v1 import blob_pb2

SERVICE_NAME = blob_pb2.DESCRIPTOR.services_by_name["BlobService"].full_name


def make_backend(settings: BlobSettings) -> BlobBackend:
    if settings.backend == "s3":
        from services.blob.backends.s3 import S3Backend

        return S3Backend(settings)
    from services.blob.backends.fs import FilesystemBackend

    return FilesystemBackend(settings.data_dir / "blob")


def create_server(address: str | None = None, settings: BlobSettings | None = None) -> tuple[ManagedServer, int]:
    settings = settings or load(BlobSettings)
    store = BlobStore(make_backend(settings), settings.chunk_bytes)
    spec = ServiceSpec(
        service_names=(SERVICE_NAME,),
        register=lambda server: register(server, store),
        open=store.open,
        probe=store.probe,
        close=store.close,
    )
    server = ManagedServer(spec, address or settings.listen, settings)
    return server, server.port
