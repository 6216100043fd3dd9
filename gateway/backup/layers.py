"""Channels and stubs for the three stateful layers, and how a failed call is reported."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from gateway.backup.errors import BackupError
from strata.blob.v1 import blob_pb2_grpc
from strata.metadata.v1 import metadata_pb2_grpc
from strata.vector.v1 import vector_pb2_grpc

# The same variables (and defaults) the gateway reads to find the layers.
DEFAULT_ADDRESSES = {
    "vector": ("STRATA_VECTOR_ADDR", "127.0.0.1:50052"),
    "metadata": ("STRATA_METADATA_ADDR", "127.0.0.1:50053"),
    "blob": ("STRATA_BLOB_ADDR", "127.0.0.1:50054"),
}
_MESSAGE_LIMIT = 64 * 1024 * 1024
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", _MESSAGE_LIMIT),
    ("grpc.max_send_message_length", _MESSAGE_LIMIT),
]
CALL_TIMEOUT = 300.0


@dataclass(frozen=True)
class Addresses:
    vector: str
    metadata: str
    blob: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Addresses:
        env = os.environ if environ is None else environ
        return cls(**{layer: env.get(name) or default for layer, (name, default) in DEFAULT_ADDRESSES.items()})


@dataclass
class Layers:
    """Stubs for the vector, metadata and blob services (close() releases the channels)."""

    addresses: Addresses
    vector: vector_pb2_grpc.VectorServiceStub
    metadata: metadata_pb2_grpc.MetadataServiceStub
    blob: blob_pb2_grpc.BlobServiceStub
    _channels: list[grpc.Channel]

    @classmethod
    def connect(cls, addresses: Addresses | None = None) -> Layers:
        addresses = addresses or Addresses.from_env()
        channels = {
            layer: grpc.insecure_channel(getattr(addresses, layer), options=_CHANNEL_OPTIONS)
            for layer in ("vector", "metadata", "blob")
        }
        return cls(
            addresses=addresses,
            vector=vector_pb2_grpc.VectorServiceStub(channels["vector"]),
            metadata=metadata_pb2_grpc.MetadataServiceStub(channels["metadata"]),
            blob=blob_pb2_grpc.BlobServiceStub(channels["blob"]),
            _channels=list(channels.values()),
        )

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Layers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def is_code(exc: grpc.RpcError, code: grpc.StatusCode) -> bool:
    return isinstance(exc, grpc.Call) and exc.code() == code


@contextlib.contextmanager
def calling(layer: str, address: str, what: str) -> Iterator[None]:
    """Turn a failed gRPC call into a BackupError naming the layer, its address and the step."""
    try:
        yield
    except grpc.RpcError as exc:
        if isinstance(exc, grpc.Call):
            detail = f"{exc.code().name}: {exc.details()}"
        else:
            detail = str(exc)
        raise BackupError(f"{what} failed on the {layer} service at {address}: {detail}") from exc
