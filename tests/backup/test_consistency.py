"""Backups taken while documents are being put, replaced and deleted are still consistent."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from gateway import naming
from gateway.backup import BackupError, create_backup, restore_backup
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.backup.helpers import bare_layers, documents, gateway_stub, layers_of, put, sql, vectors_of
from tests.support.stack import Stack, run_stack

VOCABULARY = (
    "harbour lantern granite orchard falcon meadow copper glacier violin saffron tundra marble canyon "
    "ember willow quartz lagoon thistle compass harvest beacon prairie cobalt juniper orbit velvet "
    "summit delta ivory monsoon pepper tunnel cedar nebula anchor walnut fjord parrot basalt amber"
).split()


def record_text(number: int) -> str:
    words = random.Random(number).sample(VOCABULARY, 14)
    return f"Record {number} is about the {' and the '.join(words)}."


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("source")) as stack:
        yield stack


@pytest.fixture(scope="module")
def gateway(source: Stack) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with grpc.insecure_channel(source.gateway) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def test_a_replace_between_the_dump_and_the_copy_makes_the_backup_start_again(
    tmp_path: Path, source: Stack, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name="race"))
    put(gateway, "race", "d", record_text(1))
    put(gateway, "race", "keep", record_text(2))

    def race(phase: str, attempt: int) -> None:
        if phase != "metadata":
            return
        if attempt == 1:
            put(gateway, "race", "d", record_text(3))  # generation 1's vectors and bytes go away
        elif attempt == 2:
            put(gateway, "race", "late", record_text(4))  # not in the dump: left out of the copy

    said: list[str] = []
    with layers_of(source.layers) as layers:
        manifest = create_backup(tmp_path / "backup", layers, after_phase=race, progress=said.append)
    assert manifest["attempts"] == 2
    assert any("retrying" in line for line in said)
    race_index = next(i for i in manifest["indexes"] if i["name"] == "race")
    assert race_index["left_out_unreferenced"] >= 1
    assert manifest["buckets"][0]["left_out_unreferenced"] == 1

    with bare_layers(tmp_path / "target") as addresses, layers_of(addresses) as target:
        restore_backup(tmp_path / "backup", target)
        with gateway_stub(addresses) as restored:
            docs = {d.id: d for d in documents(restored, "race")}
            assert set(docs) == {"d", "keep"}
            assert all(d.status == gateway_pb2.DOCUMENT_STATUS_READY for d in docs.values())
            assert vectors_of(target, "race", "d", 2) == docs["d"].chunk_count
            hits = restored.Search(gateway_pb2.SearchRequest(collection="race", query=record_text(3), top_k=1))
            assert hits.results[0].document_id == "d" and hits.results[0].score > 0.99


def test_a_backup_that_never_settles_fails_clearly_and_leaves_nothing(
    tmp_path: Path, source: Stack, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name="churn"))
    put(gateway, "churn", "d", record_text(10))
    versions = iter(range(11, 100))

    def churn(phase: str, _attempt: int) -> None:
        if phase == "metadata":
            put(gateway, "churn", "d", record_text(next(versions)))

    with layers_of(source.layers) as layers, pytest.raises(BackupError, match="no consistent backup after 3 attempts"):
        create_backup(tmp_path / "backup", layers, attempts=3, after_phase=churn)
    assert list(tmp_path.iterdir()) == []  # no backup, no partial directories


def test_backup_taken_while_a_writer_keeps_putting_documents_is_consistent(
    tmp_path: Path, source: Stack, gateway: gateway_pb2_grpc.GatewayServiceStub
) -> None:
    collection = "live"
    gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=collection))
    stop = threading.Event()
    written: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        # Mostly new documents, with a replacement every third put and a delete every eighth, as fast as it goes.
        number = 100
        while not stop.is_set():
            number += 1
            try:
                if number % 8 == 0:
                    gateway.DeleteDocument(
                        gateway_pb2.DeleteDocumentRequest(collection=collection, document=f"doc-{number - 5}")
                    )
                else:
                    document_id = f"doc-{number - 2 if number % 3 == 0 else number}"
                    # Long enough for several chunks now and then.
                    put(gateway, collection, document_id, record_text(number) * (1 + number % 4))
                written.append(number)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # deleting a document that is not there
                    errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(written) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        with layers_of(source.layers) as layers:
            manifests = [create_backup(tmp_path / f"backup-{n}", layers, attempts=10) for n in range(3)]
        during = len(written)
    finally:
        stop.set()
        thread.join(60)
    assert not errors
    assert len(written) > during or during >= 8  # the writer really was writing while the backups ran

    for n, manifest in enumerate(manifests):
        with bare_layers(tmp_path / f"target-{n}") as addresses, layers_of(addresses) as target:
            restore_backup(tmp_path / f"backup-{n}", target)
            with gateway_stub(addresses) as restored:
                ready = [d for d in documents(restored, collection) if d.status == gateway_pb2.DOCUMENT_STATUS_READY]
                assert ready, manifest["gateway"]
                for doc in ready:
                    row = sql(
                        target,
                        "SELECT generation FROM documents WHERE collection = ? AND id = ?",
                        collection,
                        doc.id,
                    )[0]
                    assert vectors_of(target, collection, doc.id, row["generation"]) == doc.chunk_count
                    first = sql(
                        target,
                        "SELECT text FROM chunks WHERE collection = ? AND vector_id = ?",
                        collection,
                        naming.vector_id(doc.id, row["generation"], 0),
                    )[0]["text"]
                    hits = restored.Search(gateway_pb2.SearchRequest(collection=collection, query=first, top_k=3))
                    assert doc.id in [h.document_id for h in hits.results]


def test_scratch_databases_are_hidden_and_swept_once_stale(source: Stack) -> None:
    from gateway.backup.metadata import SCRATCH_PREFIX, create_database, list_databases, sweep_scratch

    with layers_of(source.layers) as layers:
        leftover = f"{SCRATCH_PREFIX}{int(time.time()) - 600}_0123456789ab"
        create_database(layers, leftover)
        assert leftover not in list_databases(layers)
        assert sweep_scratch(layers) == []  # ten minutes old: a running backup may own it
        assert sweep_scratch(layers, older_than_seconds=300) == [leftover]
        assert sweep_scratch(layers, older_than_seconds=300) == []


def test_a_backup_that_breaks_part_way_leaves_nothing_behind(tmp_path: Path, source: Stack) -> None:
    def crash(phase: str, _attempt: int) -> None:
        if phase == "vectors":
            raise KeyboardInterrupt  # as if stopped while copying

    with layers_of(source.layers) as layers, pytest.raises(KeyboardInterrupt):
        create_backup(tmp_path / "backup", layers, after_phase=crash)
    assert list(tmp_path.iterdir()) == []
