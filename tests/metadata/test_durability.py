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


WRITERS = 4  # concurrent writers, so batches share commits (group commit); the last sends bulk statements
PER_WRITER = 1_000_000  # batch numbers of writer k: k * PER_WRITER + n


@pytest.mark.slow
def test_acknowledged_batches_survive_sigkill_and_no_batch_is_partial(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"STRATA_DATA_DIR": str(tmp_path / "data"), "STRATA_METADATA_LISTEN": address, "STRATA_LOG_LEVEL": "warning"}
    acknowledged: list[list[int]] = [[] for _ in range(WRITERS)]
    enough = threading.Event()
    server = ServerProcess("services.metadata", env, address, tmp_path / "server.log").start()
    try:
        with grpc.insecure_channel(address) as channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            stub.CreateDatabase(pb.CreateDatabaseRequest(name="durable"))
            query(
                stub, "durable", "CREATE TABLE t (batch BIGINT NOT NULL, seq BIGINT NOT NULL, PRIMARY KEY (batch, seq))"
            )

            def send(writer: int, number: int) -> None:
                if writer < WRITERS - 1:
                    statements = [
                        ("INSERT INTO t (batch, seq) VALUES (?, ?)", (number, seq)) for seq in range(ROWS_PER_BATCH)
                    ]
                    batch(stub, "durable", statements)
                    return
                bulk = pb.ParamColumns(
                    row_count=ROWS_PER_BATCH,
                    columns=[
                        pb.ParamColumn(int_values=[number] * ROWS_PER_BATCH),
                        pb.ParamColumn(int_values=range(ROWS_PER_BATCH)),
                    ],
                )
                stub.Batch(
                    pb.BatchRequest(
                        database="durable",
                        statements=[pb.Statement(sql="INSERT INTO t (batch, seq) VALUES (?, ?)", columns=bulk)],
                    ),
                    timeout=60,
                )

            def writer(k: int) -> None:
                number = k * PER_WRITER
                while True:
                    try:
                        send(k, number)
                    except grpc.RpcError:
                        return  # the server died under us: this batch is not acknowledged
                    acknowledged[k].append(number)
                    if sum(map(len, acknowledged)) >= 40 * WRITERS:
                        enough.set()
                    number += 1

            threads = [threading.Thread(target=writer, args=(k,), daemon=True) for k in range(WRITERS)]
            for thread in threads:
                thread.start()
            assert enough.wait(60), "the writers did not get enough batches acknowledged"
            server.kill()  # SIGKILL while batches keep coming
            for thread in threads:
                thread.join(30)
    finally:
        server.kill()

    with ServerProcess("services.metadata", env, address, tmp_path / "server.log") as restarted:
        with grpc.insecure_channel(restarted.address) as channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            counts = dict(rows(query(stub, "durable", "SELECT batch, count(*) FROM t GROUP BY batch")))
    every = [n for numbers in acknowledged for n in numbers]
    missing = [n for n in every if counts.get(n) != ROWS_PER_BATCH]
    assert not missing, f"acknowledged batches lost or partial after kill -9: {missing}"
    partial = {n: c for n, c in counts.items() if c != ROWS_PER_BATCH}
    assert not partial, f"partial batches after kill -9: {partial}"
    # Per writer, at most the one batch in flight at the kill may have committed without its acknowledgement.
    for k, numbers in enumerate(acknowledged):
        committed = {n for n in counts if k * PER_WRITER <= n < (k + 1) * PER_WRITER}
        assert committed - set(numbers) <= {k * PER_WRITER + len(numbers)}
