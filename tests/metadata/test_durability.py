"""kill -9 in the middle of a stream of committed batches: every acknowledged batch survives, none is partial."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc
from tests.contract.metadata.client import batch, query, rows
from tests.support.servers import ServerProcess, free_port

ROWS_PER_BATCH = 50


@pytest.mark.slow
def test_acknowledged_batches_survive_sigkill_and_no_batch_is_partial(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"STRATA_DATA_DIR": str(tmp_path / "data"), "STRATA_METADATA_LISTEN": address, "STRATA_LOG_LEVEL": "warning"}
    acknowledged: list[int] = []
    enough = threading.Event()
    server = ServerProcess("services.metadata", env, address, tmp_path / "server.log").start()
    try:
        with grpc.insecure_channel(address) as channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            stub.CreateDatabase(pb.CreateDatabaseRequest(name="durable"))
            query(
                stub, "durable", "CREATE TABLE t (batch BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (batch, seq))"
            )

            def writer() -> None:
                number = 0
                while True:
                    statements = [
                        ("INSERT INTO t (batch, seq) VALUES (?, ?)", (number, seq)) for seq in range(ROWS_PER_BATCH)
                    ]
                    try:
                        batch(stub, "durable", statements)
                    except grpc.RpcError:
                        return  # the server died under us: this batch is not acknowledged
                    acknowledged.append(number)
                    if len(acknowledged) >= 40:
                        enough.set()
                    number += 1

            thread = threading.Thread(target=writer, daemon=True)
            thread.start()
            assert enough.wait(60), "the writer did not get 40 batches acknowledged"
            server.kill()  # SIGKILL while batches keep coming
            thread.join(30)
    finally:
        server.kill()

    with ServerProcess("services.metadata", env, address, tmp_path / "server.log") as restarted:
        with grpc.insecure_channel(restarted.address) as channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            counts = dict(rows(query(stub, "durable", "SELECT batch, count(*) FROM t GROUP BY batch")))
    missing = [n for n in acknowledged if counts.get(n) != ROWS_PER_BATCH]
    assert not missing, f"acknowledged batches lost or partial after kill -9: {missing}"
    partial = {n: c for n, c in counts.items() if c != ROWS_PER_BATCH}
    assert not partial, f"partial batches after kill -9: {partial}"
    # At most the one batch in flight at the kill may have committed without its acknowledgement.
    assert set(counts) - set(acknowledged) <= {len(acknowledged)}
