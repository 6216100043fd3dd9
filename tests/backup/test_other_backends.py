"""Backups use the layer contracts only, so they work on the scale-out engines too, and move data between engines."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from gateway.backup import create_backup, restore_backup
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.backup.helpers import (
    assert_same_results,
    bare_layers,
    collection_counts,
    documents,
    gateway_stub,
    layers_of,
    searches,
)
from tests.backup.test_backup_restore import COLLECTIONS, fill
from tests.support.backends import missing_backend
from tests.support.stack import run_stack


@contextlib.contextmanager
def scale_engines(layers: tuple[str, ...]) -> Iterator[dict[str, dict[str, Any]]]:
    """Settings that put the named layers on fresh Milvus Lite / PostgreSQL / S3 (moto) instances."""
    tag = uuid.uuid4().hex[:8]
    engines: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        if "vector" in layers:
            from tests.contract.vector.milvus_server import milvus_lite

            try:
                uri = stack.enter_context(milvus_lite(Path(tempfile.mkdtemp(prefix="backup-milvus-"))))
            except (FileNotFoundError, RuntimeError) as exc:
                missing_backend(f"Milvus Lite unavailable: {exc}")
            engines["vector"] = {"backend": "milvus", "milvus_uri": uri}
        if "metadata" in layers:
            from tests.metadata.postgres_server import PostgresUnavailable, shared_postgres

            try:
                dsn = shared_postgres().new_database(f"backup_{tag}")
            except PostgresUnavailable as exc:
                missing_backend(str(exc))
            engines["metadata"] = {"backend": "postgres", "postgres_dsn": dsn}
        if "blob" in layers:
            from tests.blob.s3_servers import ACCESS_KEY, SECRET_KEY, _endpoint

            engines["blob"] = {
                "backend": "s3",
                "s3_endpoint": _endpoint("moto"),
                "s3_region": "us-east-1",
                "s3_access_key_id": ACCESS_KEY,
                "s3_secret_access_key": SECRET_KEY,
                "s3_bucket_prefix": f"b{tag}-",
            }
        yield engines


def round_trip(tmp_path: Path, source_layers: tuple[str, ...], target_layers: tuple[str, ...]) -> None:
    with scale_engines(source_layers) as engines, run_stack(tmp_path / "source", per_layer=engines) as source:
        with grpc.insecure_channel(source.gateway) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            fill(gateway)
            before = searches(gateway, COLLECTIONS)
            counts = collection_counts(gateway, COLLECTIONS)
        with layers_of(source.layers) as layers:
            create_backup(tmp_path / "backup", layers)
    with (
        scale_engines(target_layers) as engines,
        bare_layers(tmp_path / "target", per_layer=engines) as addresses,
        layers_of(addresses) as target,
    ):
        restore_backup(tmp_path / "backup", target)
        with gateway_stub(addresses) as restored:
            assert_same_results(before, searches(restored, COLLECTIONS), tolerance=1e-4)
            assert collection_counts(restored, COLLECTIONS) == counts
            for name in COLLECTIONS:
                assert all(d.status == gateway_pb2.DOCUMENT_STATUS_READY for d in documents(restored, name))


def test_a_stack_on_milvus_postgres_and_s3_restores_onto_another(tmp_path: Path) -> None:
    round_trip(tmp_path, ("vector", "metadata", "blob"), ("vector", "metadata", "blob"))


def test_the_embedded_stack_moves_onto_milvus_and_s3(tmp_path: Path) -> None:
    round_trip(tmp_path, (), ("vector", "blob"))
