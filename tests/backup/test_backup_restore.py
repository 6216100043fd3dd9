"""Back up a running stack and restore it into new data directories: the gateway answers the same."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from gateway.backup import BackupError, RestoreRefused, create_backup, restore_backup
from gateway.backup.files import sha256_file
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.backup.helpers import (
    TEXTS,
    assert_same_results,
    bare_layers,
    collection_counts,
    documents,
    gateway_stub,
    layers_of,
    put,
    searches,
    vectors_of,
)
from tests.support.servers import REPO_ROOT
from tests.support.stack import run_stack

COLLECTIONS = ["alpha", "beta"]


def backup_cli(*args: str, layers: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STRATA_VECTOR_ADDR": layers["vector"],
        "STRATA_METADATA_ADDR": layers["metadata"],
        "STRATA_BLOB_ADDR": layers["blob"],
    }
    return subprocess.run(
        [sys.executable, "-m", "gateway.backup", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def fill(gateway: gateway_pb2_grpc.GatewayServiceStub) -> None:
    for name in COLLECTIONS:
        gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=name))
    for document_id in ("bees", "volcano", "tides"):
        put(gateway, "alpha", document_id, TEXTS[document_id], topic=document_id)
    put(gateway, "alpha", "long", " ".join(TEXTS.values()) * 5, topic="everything")
    put(gateway, "alpha", "tides", TEXTS["tides"] + " Spring tides are the largest.", topic="tides")  # generation 2
    for document_id in ("bread", "chess", "bees"):
        put(gateway, "beta", document_id, TEXTS[document_id], rank=len(document_id))
    gateway.DeleteDocument(gateway_pb2.DeleteDocumentRequest(collection="beta", document="chess"))


def test_restore_into_new_data_directories_gives_the_same_search_results(tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    with run_stack(tmp_path / "a") as source, grpc.insecure_channel(source.gateway) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        fill(gateway)
        before = searches(gateway, COLLECTIONS)
        counts = collection_counts(gateway, COLLECTIONS)
        assert counts["alpha"][1] > 4  # the long document has several chunks
        created = backup_cli("create", str(backup), layers=source.layers)
        assert created.returncode == 0, created.stderr
        summary = json.loads(created.stdout)
        assert summary["indexes"] == 2 and summary["buckets"] == 1

    manifest = json.loads((backup / "manifest.json").read_text())
    assert manifest["format"] == "strata-backup" and manifest["attempts"] == 1
    assert {d["name"] for d in manifest["databases"]} == {"strata_gateway"}
    assert {i["name"]: i["vector_count"] for i in manifest["indexes"]} == {"alpha": counts["alpha"][1], "beta": 2}
    assert manifest["gateway"]["ready_documents"] == 6
    for name, entry in manifest["files"].items():
        assert sha256_file(backup / name) == entry["sha256"]
    assert not list(tmp_path.glob(".backup.partial-*"))

    damaged = tmp_path / "damaged"
    shutil.copytree(backup, damaged)
    values = damaged / "vector" / "alpha" / "values.npy"
    raw = bytearray(values.read_bytes())
    raw[-1] ^= 0xFF
    values.write_bytes(bytes(raw))

    with bare_layers(tmp_path / "b") as target_addresses, layers_of(target_addresses) as target:
        with pytest.raises(BackupError, match="damaged"):
            restore_backup(damaged, target)
        restore_backup(backup, target)
        with gateway_stub(target_addresses) as restored:
            assert_same_results(before, searches(restored, COLLECTIONS))
            assert collection_counts(restored, COLLECTIONS) == counts
            for name in COLLECTIONS:
                docs = documents(restored, name)
                assert docs and all(d.status == gateway_pb2.DOCUMENT_STATUS_READY for d in docs)
            tides = restored.GetDocument(gateway_pb2.GetDocumentRequest(collection="alpha", document="tides")).document
            assert tides.chunk_count == vectors_of(target, "alpha", "tides", 2)
            assert vectors_of(target, "alpha", "tides", 1) == 0

        with pytest.raises(RestoreRefused) as refused:
            restore_backup(backup, target)
        message = str(refused.value)
        assert "strata_gateway" in message and "'alpha'" in message and "strata-documents" in message
        cli = backup_cli("restore", str(backup), layers=target_addresses)
        assert cli.returncode == 1 and "refusing to restore" in cli.stderr and "--force" in cli.stderr

        restore_backup(backup, target, force=True)
        with gateway_stub(target_addresses) as restored:
            assert_same_results(before, searches(restored, COLLECTIONS))
            assert collection_counts(restored, COLLECTIONS) == counts


def test_backup_refuses_a_directory_that_holds_files(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "something").write_text("x")
    with pytest.raises(BackupError, match="not an empty directory"):
        create_backup(tmp_path / "taken", layers_of({"vector": "unused", "metadata": "unused", "blob": "unused"}))
