"""Shared helpers for the metadata backend tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc

from services.metadata.config import MetadataSettings
from services.metadata.server import create_server
from strata.metadata.v1 import metadata_pb2_grpc
from tests.support.servers import serve_in_thread


@contextmanager
def metadata_stub(**settings: Any) -> Iterator[metadata_pb2_grpc.MetadataServiceStub]:
    """Our server in a thread with these settings, and a stub on a real channel."""
    config = MetadataSettings(**settings)
    with (
        serve_in_thread(lambda: create_server("127.0.0.1:0", config)) as address,
        grpc.insecure_channel(address) as channel,
    ):
        yield metadata_pb2_grpc.MetadataServiceStub(channel)


def sqlite_path(data_dir: Path, name: str) -> Path:
    return data_dir / "metadata" / f"{name}.sqlite3"
