"""kill -9 during a stream of writes: after restart every acknowledged write is there, and
nothing else (each client may have one write in doubt, which is all-or-nothing)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.contract.vector.helpers import as_dict, struct, vec
from tests.support.servers import ServerProcess, free_port

pb = vector_pb2
DIMS = 16
CLIENTS = 3
ACKED_BEFORE_KILL = 150

State = dict[str, tuple[list[float], float]]  # id -> (values, slot)


class Client(threading.Thread):
    """Sequential writes in its own id space; the model holds exactly what was acknowledged."""

    def __init__(self, number: int, address: str, progress: threading.Semaphore) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.address = address
        self.progress = progress
        self.model: State = {}
        self.pending: tuple[str, Any] | None = None
        self.acked_mutations: list[int] = []
        self.rng = np.random.default_rng(number)

    def _op(self) -> tuple[str, Any]:
        roll = self.rng.random()
        if roll < 0.7:
            slots = self.rng.choice(60, size=int(self.rng.integers(1, 20)), replace=False)
            return (
                "upsert",
                [
                    (f"c{self.number}-{s}", self.rng.standard_normal(DIMS).astype(np.float32).tolist(), float(s))
                    for s in slots
                ],
            )
        if roll < 0.85:
            return ("delete_ids", [f"c{self.number}-{s}" for s in self.rng.choice(60, size=5, replace=False)])
        return ("delete_filter", float(self.rng.integers(0, 60)))

    def apply(self, state: State, op: tuple[str, Any]) -> State:
        state = dict(state)
        kind, arg = op
        if kind == "upsert":
            for vid, values, slot in arg:
                state[vid] = (values, slot)
        elif kind == "delete_ids":
            for vid in arg:
                state.pop(vid, None)
        else:
            state = {k: v for k, v in state.items() if not v[1] < arg}
        return state

    def _upsert(self, arg: list[tuple[str, list[float], float]]) -> pb.UpsertVectorsRequest:
        """Client 1 writes in columns (metadata as JSON text), the others as Vector messages."""
        if self.number == 1:
            columns = pb.VectorColumns(
                ids=[vid for vid, _, _ in arg],
                values=np.asarray([values for _, values, _ in arg], dtype="<f4").tobytes(),
                metadata_json=[json.dumps({"client": self.number, "slot": slot}) for _, _, slot in arg],
            )
            return pb.UpsertVectorsRequest(index_name="crash", columns=columns)
        vectors = [vec(v, values, {"client": self.number, "slot": slot}) for v, values, slot in arg]
        return pb.UpsertVectorsRequest(index_name="crash", vectors=vectors)

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = vector_pb2_grpc.VectorServiceStub(channel)
            while True:
                op = self._op()
                self.pending = op
                kind, arg = op
                try:
                    if kind == "upsert":
                        reply = stub.UpsertVectors(self._upsert(arg), timeout=10)
                    elif kind == "delete_ids":
                        reply = stub.DeleteVectors(pb.DeleteVectorsRequest(index_name="crash", ids=arg), timeout=10)
                    else:
                        where = struct({"client": self.number, "slot": {"$lt": arg}})
                        reply = stub.DeleteVectors(
                            pb.DeleteVectorsRequest(index_name="crash", filter=where), timeout=10
                        )
                except grpc.RpcError:
                    return  # the server died with this op in doubt
                self.model = self.apply(self.model, op)
                self.pending = None
                self.acked_mutations.append(reply.mutation_id)
                self.progress.release()


def _dump(stub: Any) -> dict[int, State]:
    out: dict[int, State] = {n: {} for n in range(CLIENTS)}
    token = ""
    while True:
        page = stub.ListVectors(
            pb.ListVectorsRequest(
                index_name="crash", page_size=1000, page_token=token, return_values=True, return_metadata=True
            )
        )
        for v in page.vectors:
            meta = as_dict(v.metadata)
            out[int(meta["client"])][v.id] = (list(v.values), meta["slot"])
        token = page.next_page_token
        if not token:
            return out


@pytest.mark.slow
@pytest.mark.parametrize("snapshots", ["log-only", "frequent-snapshots"])
def test_kill_9_keeps_every_acknowledged_write(tmp_path: Path, snapshots: str) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"STRATA_DATA_DIR": str(tmp_path), "STRATA_VECTOR_LISTEN": address, "STRATA_LOG_LEVEL": "warning"}
    if snapshots == "frequent-snapshots":
        env |= {"STRATA_VECTOR_WAL_MAX_ENTRIES": "25", "STRATA_VECTOR_SNAPSHOT_INTERVAL_SECONDS": "0.2"}
    server = ServerProcess("services.vector", env, address, tmp_path / "server.log").start()
    try:
        with grpc.insecure_channel(address) as channel:
            vector_pb2_grpc.VectorServiceStub(channel).CreateIndex(
                pb.CreateIndexRequest(name="crash", dimensions=DIMS, metric=pb.METRIC_COSINE)
            )
        progress = threading.Semaphore(0)
        clients = [Client(n, address, progress) for n in range(CLIENTS)]
        for client in clients:
            client.start()
        for _ in range(ACKED_BEFORE_KILL):
            assert progress.acquire(timeout=60), "writes stalled"
        server.kill()
        for client in clients:
            client.join(30)
            assert not client.is_alive()
    finally:
        server.kill()

    with ServerProcess("services.vector", env, address, tmp_path / "server.log") as restarted:
        del restarted
        with grpc.insecure_channel(address) as channel:
            stub = vector_pb2_grpc.VectorServiceStub(channel)
            found = _dump(stub)
            info = stub.GetIndex(pb.GetIndexRequest(name="crash")).index
    for client in clients:
        acked = client.model
        allowed = [acked] if client.pending is None else [acked, client.apply(acked, client.pending)]
        assert found[client.number] in allowed, f"client {client.number}: state is neither acked nor acked+pending"
    assert info.last_mutation_id >= max(m for c in clients for m in c.acked_mutations)
    assert info.vector_count == sum(len(s) for s in found.values())
