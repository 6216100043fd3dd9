"""Vector service benchmark: every figure beside raw FAISS measured in the same run.

100k vectors of 384 dimensions, cosine, clustered like real embeddings (low-rank plus
noise, not uniform noise). The server runs in its own process, as deployed; raw FAISS runs
in this process with the same settings (one OpenMP thread).

- Single-query latency p50/p99 through gRPC vs raw `search`. Target: <= 1.3x.
- Queries/s with 16 concurrent clients vs a raw single-query loop. Target: >= 1.5x
  (concurrent queries are micro-batched into one FAISS call).
- Upsert throughput, batches of 1,000, fsync included, vs raw `add_with_ids`. Target: >= 0.5x.
  Sent in columns (`VectorColumns`) with 4 calls in flight, as a bulk loader would: the median of
  3 loads, each beside a raw load of its own, with every run's ratio printed. Beside it the
  same one call at a time, the per-vector `Vector` form, what the same requests cost Python gRPC
  alone (a server on the same runtime that stores nothing), raw adds in a process whose malloc
  uses huge pages as the service's does (faulting FAISS's growing storage in 4 KiB at a time is
  most of a raw add's cost here), and the floor no implementation avoids: one batch's log fsync
  plus FAISS's own add.
- Filtered query latency (10% selectivity) vs unfiltered, both through gRPC.
- HNSW recall@10 against exact search, and its latency.
- Restart time with 100k vectors in the snapshot and a 10k-entry log.
- Query latency while a second 100k loads into an index holding 100k, crossing a doubling of
  FAISS's storage, beside raw FAISS's longest add (the copy a search under one lock waits for):
  the service grows the storage by moving its pages (`realloc`), not by copying it.
- Single-vector upsert latency while snapshots of the whole index are taken (about one a second):
  a snapshot holds writes only while it captures the index, not while it writes the file.

    .venv/bin/python bench/vector.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine  # noqa: E402
from bench.runtime_baseline import serve_on_runtime, start_baseline_process  # noqa: E402
from strata.vector.v1 import vector_pb2 as pb  # noqa: E402
from strata.vector.v1 import vector_pb2_grpc  # noqa: E402
from tests.support.servers import ServerProcess, free_port, wait_serving  # noqa: E402

DIMS = 384
CLIENTS = 16
LATENCY_TARGET = 1.3
QPS_TARGET = 1.5
UPSERT_TARGET = 0.5
BATCH = 1000
IN_FLIGHT = 4
UPSERT_RUNS = 3  # the headline upsert figure is the median of this many runs
SNAPSHOT_CLIENTS = 4


def clustered(n: int, seed: int) -> np.ndarray:
    """Embedding-like data: 400 clusters on a 64-dimensional subspace, plus isotropic noise
    carrying about a fifth of the variance."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).standard_normal((64, DIMS)).astype(np.float32)
    centers = np.random.default_rng(1).standard_normal((400, 64)).astype(np.float32)
    points = centers[rng.integers(0, 400, n)] + 0.6 * rng.standard_normal((n, 64)).astype(np.float32)
    data = points @ basis + 5.0 * rng.standard_normal((n, DIMS)).astype(np.float32)
    faiss.normalize_L2(data)
    return data


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, figure: str, strata: str, raw: str, ratio: str = "", target: str = "") -> int:
        """Print a figure now and keep it for the table; its row number."""
        self.rows.append((figure, strata, raw, ratio, target))
        print(f"  {figure}: strata {strata} | raw {raw} | {ratio} {target}", flush=True)
        return len(self.rows) - 1

    def replace(self, row: int, figure: str, strata: str, raw: str, ratio: str = "", target: str = "") -> None:
        """A figure measured again: printed now (if it changed) and in the table in its old place."""
        if self.rows[row] != (figure, strata, raw, ratio, target):
            self.rows[row] = (figure, strata, raw, ratio, target)
            print(f"  {figure}: strata {strata} | raw {raw} | {ratio} {target}", flush=True)

    def print(self) -> None:
        header = ("figure", "strata", "raw FAISS", "ratio", "target")
        widths = [max(len(r[i]) for r in [header, *self.rows]) for i in range(5)]
        for row in [header, tuple("-" * w for w in widths), *self.rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def _metadata(i: int) -> dict[str, Any]:
    return {"bucket": i % 10, "document_id": f"doc-{i // 20}"}


def upsert_requests(name: str, data: np.ndarray, start_id: int = 0, *, columns: bool = True) -> list[bytes]:
    """Batches of BATCH as serialised UpsertVectorsRequests: in columns, or as Vector messages."""
    requests = []
    for start in range(0, len(data), BATCH):
        rows = range(start, min(start + BATCH, len(data)))
        if columns:
            batch = pb.VectorColumns(
                ids=[f"v{start_id + i}" for i in rows],
                values=np.ascontiguousarray(data[start : rows.stop], dtype="<f4").tobytes(),
                metadata_json=[json.dumps(_metadata(i), separators=(",", ":")) for i in rows],
            )
            request = pb.UpsertVectorsRequest(index_name=name, columns=batch)
        else:
            vectors = []
            for i in rows:
                v = pb.Vector(id=f"v{start_id + i}", values=data[i].tolist())
                v.metadata.update(_metadata(i))
                vectors.append(v)
            request = pb.UpsertVectorsRequest(index_name=name, vectors=vectors)
        requests.append(request.SerializeToString())
    return requests


def log_fsync_seconds(path: Path, size: int, times: int) -> list[float]:
    """Appending `size` bytes to a log and fdatasync-ing it, as the service does per write."""
    payload = os.urandom(size)
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(times):
            started = time.perf_counter()
            os.write(fd, payload)
            os.fdatasync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        path.unlink()
    return samples


def send_upserts(channel: grpc.Channel, requests: list[bytes], in_flight: int = IN_FLIGHT) -> float:
    """Send pre-serialised requests (so client-side encoding is not counted), keeping up to
    `in_flight` calls open; seconds taken."""
    call = channel.unary_unary(
        "/strata.vector.v1.VectorService/UpsertVectors",
        request_serializer=lambda raw: raw,
        response_deserializer=pb.UpsertVectorsResponse.FromString,
    )
    started = time.perf_counter()
    window: list[Any] = []
    for raw in requests:
        window.append(call.future(raw, timeout=120))
        if len(window) >= in_flight:
            window.pop(0).result()
    for future in window:
        future.result()
    return time.perf_counter() - started


def cpu_seconds(pid: int | None = None) -> tuple[float, float] | None:
    """(user, system) CPU seconds a process has used: this one (pid None), or another where
    /proc shows it (Linux); None elsewhere."""
    if pid is None:
        times = os.times()
        return times.user, times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def resident_bytes(pid: int) -> int | None:
    """Resident memory of a process where /proc shows it (Linux); None elsewhere."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


class _Sink(vector_pb2_grpc.VectorServiceServicer):
    """The service's runtime with no index: takes an upsert and answers. What Python gRPC alone
    costs for the same requests on this machine."""

    async def UpsertVectors(self, request: pb.UpsertVectorsRequest, context: object) -> pb.UpsertVectorsResponse:
        return pb.UpsertVectorsResponse(mutation_id=1, upserted_count=len(request.columns.ids))


def serve_sink(address: str) -> None:
    serve_on_runtime(
        address,
        "strata.vector.v1.VectorService",
        lambda server: vector_pb2_grpc.add_VectorServiceServicer_to_server(_Sink(), server),
    )


async def concurrent_qps(address: str, name: str, queries: np.ndarray, seconds: float) -> float:
    requests = [pb.QueryRequest(index_name=name, vector=q.tolist(), top_k=10) for q in queries]
    done = 0
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        await stub.Query(requests[0])

        async def client(offset: int) -> None:
            nonlocal done
            i = offset
            while time.perf_counter() < deadline:
                await stub.Query(requests[i % len(requests)])
                done += 1
                i += CLIENTS

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(CLIENTS)))
        return done / (time.perf_counter() - started)


def raw_add_seconds(raw: Any, data: np.ndarray, start: int, stop: int) -> float:
    """Add data[start:stop] to a raw FAISS index in batches as the service gets them; seconds taken."""
    began = time.perf_counter()
    for first in range(start, stop, BATCH):
        chunk = np.array(data[first : min(first + BATCH, stop)])
        faiss.normalize_L2(chunk)
        raw.add_with_ids(chunk, np.arange(first, first + len(chunk), dtype=np.int64))
    return time.perf_counter() - began


# `raw_add_seconds` over the same data into a fresh index, in a child process whose environment
# the caller sets.
_RAW_ADD = """
import sys
import faiss
sys.path.insert(0, sys.argv[1])
from bench.vector import DIMS, clustered, raw_add_seconds
faiss.omp_set_num_threads(1)
n = int(sys.argv[2])
print(raw_add_seconds(faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS)), clustered(n, seed=2), 0, n))
"""


def raw_add_seconds_with_huge_pages(n: int) -> float | None:
    """Raw adds as above, in a process whose malloc uses huge pages as the service's does; None
    where the service would not turn them on."""
    from services.runtime.memory import HUGE_PAGES_TUNABLE, huge_pages_would_help

    if not huge_pages_would_help():
        return None
    env = {**os.environ, "GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}
    out = subprocess.run(
        [sys.executable, "-c", _RAW_ADD, str(ROOT), str(n)], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.split()[-1])


def upsert_sink_seconds(data_dir: Path, requests: list[bytes]) -> float:
    """Seconds the no-storage server (a process of its own, like the service) takes for `requests`."""
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    with open(data_dir / "sink.log", "wb") as log:
        sink = start_baseline_process(Path(__file__).resolve(), address, env, ROOT, log)
        try:
            wait_serving(address, 60)
            with grpc.insecure_channel(address) as channel:
                send_upserts(channel, requests[:5])  # connection and first-call costs out of the figure
                return send_upserts(channel, requests)
        finally:
            sink.terminate()
            sink.wait(30)


def upsert_again(stub: Any, channel: grpc.Channel, name: str, data: np.ndarray) -> tuple[float, float]:
    """One more load of `data` into a fresh index, beside a raw load into a fresh FAISS index
    (half before, half after); (raw seconds, service seconds)."""
    n = len(data)
    half = (n // BATCH // 2) * BATCH
    stub.CreateIndex(pb.CreateIndexRequest(name=name, dimensions=DIMS, metric=pb.METRIC_COSINE))
    raw = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS))
    raw_seconds = raw_add_seconds(raw, data, 0, half)
    ours_seconds = send_upserts(channel, upsert_requests(name, data))
    raw_seconds += raw_add_seconds(raw, data, half, n)
    stub.DeleteIndex(pb.DeleteIndexRequest(name=name))
    return raw_seconds, ours_seconds


def raw_longest_add(data: np.ndarray) -> float:
    """Seconds of the longest batch when raw FAISS takes `data` twice over (ids 0..2n): the add that
    doubles FAISS's storage copies every vector, and a search needing the index waits for it."""
    raw = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS))
    longest = 0.0
    for first in range(0, 2 * len(data), BATCH):
        chunk = np.array(data[first % len(data) : first % len(data) + BATCH])
        faiss.normalize_L2(chunk)
        started = time.perf_counter()
        raw.add_with_ids(chunk, np.arange(first, first + len(chunk), dtype=np.int64))
        longest = max(longest, time.perf_counter() - started)
    return longest


def queries_during_load(
    address: str, stub: Any, channel: grpc.Channel, data: np.ndarray, queries: np.ndarray
) -> list[float]:
    """Seconds each query took (one client on its own connection) while a second copy of `data`
    loads into an index already holding the first: the load crosses a doubling of the storage."""
    stub.CreateIndex(pb.CreateIndexRequest(name="ingest", dimensions=DIMS, metric=pb.METRIC_COSINE))
    send_upserts(channel, upsert_requests("ingest", data))
    requests = [pb.QueryRequest(index_name="ingest", vector=q.tolist(), top_k=10) for q in queries]
    latencies: list[float] = []
    loading = True

    def query_loop() -> None:
        with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as own:
            query = vector_pb2_grpc.VectorServiceStub(own).Query
            query(requests[0])
            i = 0
            while loading:
                started = time.perf_counter()
                query(requests[i % len(requests)])
                latencies.append(time.perf_counter() - started)
                i += 1

    thread = threading.Thread(target=query_loop)
    thread.start()
    try:
        send_upserts(channel, upsert_requests("ingest", data, start_id=len(data)))
    finally:
        loading = False
        thread.join()
    stub.DeleteIndex(pb.DeleteIndexRequest(name="ingest"))
    return latencies


def _median_pair(pairs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (raw seconds, service seconds) run whose ratio is the median."""
    return sorted(pairs, key=lambda pair: pair[0] / pair[1])[len(pairs) // 2]


def _upsert_row(n: int, pairs: list[tuple[float, float]]) -> tuple[str, str, str, str, str]:
    """The headline upsert row: the median run, and every run's ratio when there are several."""
    ratios = sorted(raw / ours for raw, ours in pairs)
    raw, ours = _median_pair(pairs)
    runs = f" (median of {len(pairs)}: {', '.join(f'{r:.2f}x' for r in ratios)})" if len(pairs) > 1 else ""
    return (
        f"upsert, batches of {BATCH} in columns, {IN_FLIGHT} calls in flight (vectors/s)",
        f"{n / ours:,.0f}",
        f"{n / raw:,.0f}",
        f"{raw / ours:.2f}x",
        f"target >= {UPSERT_TARGET}x{runs}",
    )


def start_server(data_dir: Path, address: str, **env: str) -> ServerProcess:
    settings = {
        "STRATA_DATA_DIR": str(data_dir),
        "STRATA_VECTOR_LISTEN": address,
        "STRATA_LOG_LEVEL": "warning",
        **env,
    }
    return ServerProcess("services.vector", settings, address, data_dir / "server.log").start(timeout=300)


async def upsert_latencies(address: str, values: np.ndarray, seconds: float) -> list[float]:
    """Seconds each single-vector upsert took, SNAPSHOT_CLIENTS at a time, for `seconds`."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)

        async def client(number: int) -> None:
            i = 0
            while time.perf_counter() < deadline:
                vector = pb.Vector(id=f"during-{number}-{i}", values=values[i % len(values)].tolist())
                started = time.perf_counter()
                await stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="flat", vectors=[vector]))
                latencies.append(time.perf_counter() - started)
                i += 1

        await asyncio.gather(*(client(number) for number in range(SNAPSHOT_CLIENTS)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5k vectors, short runs: seconds, not minutes")
    parser.add_argument("--serve-sink", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink:
        serve_sink(args.serve_sink)
        return
    quick = args.quick or os.environ.get("STRATA_BENCH_QUICK") == "1"
    n = 5_000 if quick else 100_000
    n_queries = 100 if quick else 500
    seconds = 1.5 if quick else 8.0
    log_entries = 500 if quick else 10_000
    faiss.omp_set_num_threads(1)
    print(f"vector benchmark ({'quick' if quick else 'full'}; {n} x {DIMS} cosine, clustered; {os.cpu_count()} CPUs;")
    print("numbers are noisy when the machine is shared)")
    print(machine.describe(), flush=True)
    data = clustered(n, seed=2)
    queries = clustered(n_queries, seed=3)
    report = Report()

    # Raw FAISS runs in this process, interleaved with the service measurements so both see
    # the same machine load (other work on a shared box skews back-to-back runs).
    raw = faiss.IndexIDMap2(faiss.IndexFlatIP(DIMS))

    def raw_add(start: int, stop: int) -> float:
        return raw_add_seconds(raw, data, start, stop)

    def raw_search(q: np.ndarray) -> float:
        started = time.perf_counter()
        raw.search(q.reshape(1, -1), 10)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory(prefix="strata-bench-vector-") as tmp:
        data_dir = Path(tmp)
        address = f"127.0.0.1:{free_port()}"
        server = start_server(data_dir, address)
        try:
            with grpc.insecure_channel(address) as channel:
                stub = vector_pb2_grpc.VectorServiceStub(channel)
                for name in ("flat", "one-call", "messages"):
                    stub.CreateIndex(pb.CreateIndexRequest(name=name, dimensions=DIMS, metric=pb.METRIC_COSINE))
                # Raw adds half the data before and half after the service's runs: the same load for both.
                half = (n // BATCH // 2) * BATCH
                raw_seconds = raw_add(0, half)
                columns = upsert_requests("flat", data)
                assert server.proc is not None
                cpu_before = cpu_seconds(server.proc.pid), cpu_seconds()
                idle = resident_bytes(server.proc.pid)
                ours_seconds = send_upserts(channel, columns)
                cpu_after = cpu_seconds(server.proc.pid), cpu_seconds()
                resident = resident_bytes(server.proc.pid)
                one_call_seconds = send_upserts(channel, upsert_requests("one-call", data), in_flight=1)
                messages_seconds = send_upserts(channel, upsert_requests("messages", data, columns=False), in_flight=1)
                raw_seconds += raw_add(half, n)
                for name in ("one-call", "messages"):
                    stub.DeleteIndex(pb.DeleteIndexRequest(name=name))
                raw_upsert_rate = n / raw_seconds
                pairs = [(raw_seconds, ours_seconds)]  # more runs at the end (`upsert_again`)
                headline = report.add(*_upsert_row(n, pairs))
                for figure, spent, target in (
                    ("  same, one call at a time", one_call_seconds, False),
                    ("  same as Vector messages, one call at a time", messages_seconds, False),
                ):
                    report.add(
                        figure,
                        f"{n / spent:,.0f}",
                        f"{raw_upsert_rate:,.0f}",
                        f"{raw_seconds / spent:.2f}x",
                        f"target >= {UPSERT_TARGET}x" if target else "",
                    )
                sink_seconds = upsert_sink_seconds(data_dir, columns)

                def sink_row(ours: float) -> tuple[str, str, str, str, str]:
                    return (
                        f"  gRPC alone: the same requests to a server that stores nothing, {IN_FLIGHT} in flight",
                        f"{n / sink_seconds:,.0f}",
                        f"{raw_upsert_rate:,.0f}",
                        f"{raw_seconds / sink_seconds:.2f}x",
                        f"strata = {sink_seconds / ours:.2f}x of gRPC alone",
                    )

                sink_line = report.add(*sink_row(ours_seconds))
                huge_seconds = raw_add_seconds_with_huge_pages(n)

                def huge_row(ours: float, huge: float) -> tuple[str, str, str, str, str]:
                    return (
                        "  vs raw add on huge pages, as the service allocates (glibc.malloc.hugetlb=1)",
                        f"{n / ours:,.0f}",
                        f"{n / huge:,.0f}",
                        f"{huge / ours:.2f}x",
                        "raw above: malloc defaults",
                    )

                huge_line = None if huge_seconds is None else report.add(*huge_row(ours_seconds, huge_seconds))

                # What an upsert cannot avoid: the fsync of its log record (about the request's size)
                # plus FAISS's own add, against the whole per-batch budget the target allows.
                fsync_ms = statistics.median(log_fsync_seconds(data_dir / "probe.log", len(columns[0]), 20)) * 1000
                raw_batch_ms = raw_seconds / (n / BATCH) * 1000
                budget_ms = raw_batch_ms / UPSERT_TARGET  # a batch's time at the target
                report.add(
                    "upsert floor per batch (ms): log fsync + raw add",
                    f"{fsync_ms:.2f} + {raw_batch_ms:.2f}",
                    "",
                    "",
                    f"budget at {UPSERT_TARGET}x: {budget_ms:.2f} ms incl. gRPC",
                )

                service_before, client_before = cpu_before
                service_after, client_after = cpu_after
                if service_before is not None and service_after is not None and client_before and client_after:
                    # Where the time goes: CPU both processes used per batch, against the cores
                    # times the wall time per batch (with the GIL, one Python thread runs at a time).
                    batches = n / BATCH
                    user, system = (
                        (after - before) / batches * 1000
                        for after, before in zip(service_after, service_before, strict=True)
                    )
                    client = (sum(client_after) - sum(client_before)) / batches * 1000
                    cores = os.cpu_count() or 1
                    # The CPU both processes spend per batch today, beside what the cores could
                    # give them in the time a batch may take at the target, were they never idle.
                    report.add(
                        "  CPU per batch (ms): service user + system; client",
                        f"{user:.2f} + {system:.2f}",
                        f"{client:.2f}",
                        "",
                        f"{cores} cores x {ours_seconds / batches * 1000:.2f} ms per batch; at {UPSERT_TARGET}x, "
                        f"{cores} x {budget_ms:.2f} = {cores * budget_ms:.2f} ms "
                        f"for the {user + system + client:.2f} spent",
                    )
                if resident is not None and idle is not None:
                    vectors, grown = n * DIMS * 4, resident - idle
                    report.add(
                        f"service memory grown by loading {n:,} vectors (MiB)",
                        f"{grown / 2**20:,.0f} ({resident / 2**20:,.0f} resident)",
                        f"{vectors / 2**20:,.0f} (the vectors alone)",
                        f"{grown / vectors:.2f}x",
                        "FAISS + keys, metadata, filter index; cosine values are read back from disk",
                    )

                requests = [pb.QueryRequest(index_name="flat", vector=q.tolist(), top_k=10) for q in queries]
                for r in requests[:20]:
                    stub.Query(r)
                latency = []
                raw_latency = []
                for q, r in zip(queries, requests, strict=True):
                    started = time.perf_counter()
                    stub.Query(r)
                    latency.append(time.perf_counter() - started)
                    raw_latency.append(raw_search(q))
                for name, q in (("p50", 0.5), ("p99", 0.99)):
                    ours, base = percentile(latency, q) * 1000, percentile(raw_latency, q) * 1000
                    report.add(
                        f"single query latency {name} (ms)",
                        f"{ours:.2f}",
                        f"{base:.2f}",
                        f"{ours / base:.2f}x",
                        f"target <= {LATENCY_TARGET}x",
                    )

                # The raw single-query loop runs just before and just after the concurrent run.
                raw_before = [raw_search(q) for q in queries[: n_queries // 2]]
                qps = asyncio.run(concurrent_qps(address, "flat", queries, seconds))
                raw_after = [raw_search(q) for q in queries[n_queries // 2 :]]
                raw_qps = (len(raw_before) + len(raw_after)) / (sum(raw_before) + sum(raw_after))
                report.add(
                    f"queries/s, {CLIENTS} concurrent clients",
                    f"{qps:,.0f}",
                    f"{raw_qps:,.0f} (1-query loop)",
                    f"{qps / raw_qps:.2f}x",
                    f"target >= {QPS_TARGET}x",
                )

                filtered = []
                for r in requests:
                    f = pb.QueryRequest()
                    f.CopyFrom(r)
                    f.filter.update({"bucket": 3})
                    started = time.perf_counter()
                    reply = stub.Query(f)
                    filtered.append(time.perf_counter() - started)
                    assert len(reply.matches) == 10
                unfiltered_p50 = statistics.median(latency) * 1000
                filtered_p50 = statistics.median(filtered) * 1000
                report.add(
                    "filtered query p50, 10% selectivity (ms)",
                    f"{filtered_p50:.2f}",
                    f"{unfiltered_p50:.2f} (unfiltered, gRPC)",
                    f"{filtered_p50 / unfiltered_p50:.2f}x",
                    "",
                )

                # HNSW: recall@10 against exact neighbours, and latency.
                stub.CreateIndex(
                    pb.CreateIndexRequest(
                        name="graph", dimensions=DIMS, metric=pb.METRIC_COSINE, index_type=pb.INDEX_TYPE_HNSW
                    )
                )
                build = send_upserts(channel, upsert_requests("graph", data))
                _, exact = raw.search(queries, 10)
                hits = 0
                graph_latency = []
                for q, truth in zip(queries, exact, strict=True):
                    started = time.perf_counter()
                    reply = stub.Query(pb.QueryRequest(index_name="graph", vector=q.tolist(), top_k=10))
                    graph_latency.append(time.perf_counter() - started)
                    hits += len({int(m.id[1:]) for m in reply.matches} & set(truth.tolist()))
                recall = hits / (10 * len(queries))
                report.add(
                    "HNSW recall@10 vs exact",
                    f"{recall:.3f}",
                    "1.000 (flat)",
                    "",
                    f"(build {n / build:,.0f} vectors/s)",
                )
                graph_p50 = statistics.median(graph_latency) * 1000
                report.add(
                    "HNSW query p50 (ms)",
                    f"{graph_p50:.2f}",
                    f"{unfiltered_p50:.2f} (flat, gRPC)",
                    f"{graph_p50 / unfiltered_p50:.2f}x",
                    "",
                )
                stub.DeleteIndex(pb.DeleteIndexRequest(name="graph"))

                # The headline upsert figure again, into fresh indexes, each run beside a raw load of
                # its own: a 100k load takes half a second, and this machine's speed drifts by a
                # quarter between runs. Run last, so their memory churn cannot touch the figures above.
                for run in range(1, 1 if quick else UPSERT_RUNS):
                    pairs.append(upsert_again(stub, channel, f"again-{run}", data))
                report.replace(headline, *_upsert_row(n, pairs))
                median_ours = _median_pair(pairs)[1]  # the rows comparing against the headline follow it
                report.replace(sink_line, *sink_row(median_ours))
                if huge_line is not None and huge_seconds is not None:
                    report.replace(huge_line, *huge_row(median_ours, huge_seconds))

                during_load = queries_during_load(address, stub, channel, data, queries)
                report.add(
                    f"query p50 / p99 / max while {n:,} more vectors load into {n:,} (ms)",
                    " / ".join(f"{percentile(during_load, q) * 1000:.1f}" for q in (0.5, 0.99, 1.0)),
                    f"{raw_longest_add(data) * 1000:.1f} (longest add)",
                    "",
                    f"({len(during_load)} queries; raw: a search under one lock waits out FAISS doubling its storage)",
                )
        finally:
            server.terminate(120)  # a clean stop snapshots the index

        # Restart: snapshot of n vectors plus a log of single-vector upserts, after kill -9.
        server = start_server(
            data_dir,
            address,
            STRATA_VECTOR_WAL_MAX_ENTRIES=str(10 * log_entries),
            STRATA_VECTOR_SNAPSHOT_INTERVAL_SECONDS="86400",
        )
        try:
            extra = clustered(log_entries, seed=4)

            async def single_upserts() -> None:
                async with grpc.aio.insecure_channel(address) as channel:
                    stub = vector_pb2_grpc.VectorServiceStub(channel)
                    pending = iter(range(log_entries))

                    async def client() -> None:
                        for i in pending:
                            vector = pb.Vector(id=f"log{i}", values=extra[i].tolist())
                            await stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="flat", vectors=[vector]))

                    await asyncio.gather(*(client() for _ in range(CLIENTS)))

            started = time.perf_counter()
            asyncio.run(single_upserts())
            single_rate = log_entries / (time.perf_counter() - started)
        finally:
            server.kill()
        started = time.perf_counter()
        # Snapshot at every maintenance tick (~1/s) that finds the log non-empty: for the figure below.
        server = start_server(data_dir, address, STRATA_VECTOR_WAL_MAX_ENTRIES="1")
        restart = time.perf_counter() - started
        try:
            with grpc.insecure_channel(address) as channel:
                info = vector_pb2_grpc.VectorServiceStub(channel).GetIndex(pb.GetIndexRequest(name="flat")).index
                assert info.vector_count == n + log_entries, info.vector_count
            during = asyncio.run(upsert_latencies(address, extra, seconds=2 if quick else 6))
        finally:
            server.terminate(120)
        report.add(
            f"restart to SERVING, {n:,} snapshot + {log_entries:,}-entry log (s)",
            f"{restart:.2f}",
            "",
            "",
            f"(single-vector upserts: {single_rate:,.0f}/s, {CLIENTS} clients)",
        )
        report.add(
            f"single-vector upsert while {n + log_entries:,}-vector snapshots run, p50 / p99 / max (ms)",
            " / ".join(f"{percentile(during, q) * 1000:.1f}" for q in (0.5, 0.99, 1.0)),
            "",
            "",
            f"({len(during):,} upserts, {SNAPSHOT_CLIENTS} clients, a snapshot each second)",
        )

    print()
    report.print()


if __name__ == "__main__":
    main()
