"""Fixtures for the blob backend tests: our server on a temporary data dir, S3 servers, stubs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from services.blob.config import BlobSettings
from services.blob.server import create_server
from strata.blob.v1 import blob_pb2_grpc
from tests.blob.s3_servers import moto_endpoint, seaweedfs_endpoint
from tests.support.servers import serve_in_thread

__all__ = ["moto_endpoint", "seaweedfs_endpoint"]  # session fixtures shared with the contract suite


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def fs_address(data_dir: Path) -> Iterator[str]:
    settings = BlobSettings(data_dir=data_dir)
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        yield address


@pytest.fixture
def fs_stub(fs_address: str) -> Iterator[blob_pb2_grpc.BlobServiceStub]:
    with grpc.insecure_channel(fs_address) as channel:
        yield blob_pb2_grpc.BlobServiceStub(channel)
