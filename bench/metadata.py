"""Metadata service benchmark: every figure beside raw sqlite3 (and an empty gRPC echo) in the same run.

- 100k-row insert through Batch, chunks of 1,000 rows each bound as one bulk statement (typed
  columns), vs sqlite3 executemany in one transaction, same pragmas (WAL, synchronous=FULL).
  Target: >= 0.5x. The same rows as 1,000 statements per Batch are reported beside it.
- Point query by primary key, p50: through gRPC vs raw sqlite3, and vs an empty gRPC round trip
  (an echo built here on the same runtime: same interceptor, health, messages). Target: the
  service adds <= 0.3 ms beyond the echo.
- 10-id IN lookups, queries/s with 8 concurrent clients, vs raw sqlite3 on 8 threads.
- One-row insert transactions from 8 clients at once (grouped into shared commits by the server)
  vs raw sqlite3 on 8 threads in autocommit.

    .venv/bin/python bench/metadata.py [--quick]

The metadata server and the echo server each run in their own process, as deployed.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.runtime_baseline import serve_on_runtime  # noqa: E402
from strata.metadata.v1 import metadata_pb2 as pb  # noqa: E402
from strata.metadata.v1 import metadata_pb2_grpc  # noqa: E402
from tests.support.servers import free_port, wait_serving  # noqa: E402

INSERT_TARGET = 0.5
IN_FLIGHT = 8  # Batch calls a bulk loader keeps in flight
OVERHEAD_TARGET_MS = 0.3
CLIENTS = 8
REPEATS = 3
ROUND = 100  # point-query samples per interleaved round
SCHEMA = "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, value INTEGER NOT NULL)"
INSERT = "INSERT INTO items (id, name, value) VALUES (?, ?, ?)"
POINT = "SELECT id, name, value FROM items WHERE id = ?"
IN_10 = "SELECT id, name, value FROM items WHERE id IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"


# --- the echo server: the same runtime, a Query that does nothing ----------------------------


class _Echo(metadata_pb2_grpc.MetadataServiceServicer):
    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext) -> pb.QueryResponse:
        return pb.QueryResponse()


def serve_echo(address: str) -> None:
    serve_on_runtime(
        address,
        "strata.metadata.v1.MetadataService",
        lambda server: metadata_pb2_grpc.add_MetadataServiceServicer_to_server(_Echo(), server),
    )


# --- measurement helpers -----------------------------------------------------------------------


def p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed_calls(call: Callable[[int], object], keys: list[int]) -> list[float]:
    samples = []
    for key in keys:
        started = time.perf_counter()
        call(key)
        samples.append(time.perf_counter() - started)
    return samples


def qps(worker: Callable[[int], Callable[[], object]], seconds: float) -> float:
    """Calls per second from CLIENTS threads, each running worker(i)() in a loop for `seconds`."""
    counts = [0] * CLIENTS
    stop = threading.Event()
    start = threading.Barrier(CLIENTS + 1)

    def run(index: int) -> None:
        call = worker(index)
        call()  # warm up the connection
        start.wait()
        while not stop.is_set():
            call()
            counts[index] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - began)


def send_batches(stub: metadata_pb2_grpc.MetadataServiceStub, requests: list[pb.BatchRequest], in_flight: int) -> None:
    """Each Batch is its own transaction; with several in flight the server commits them in groups."""
    pending: list[grpc.Future] = []
    for request in requests:
        if len(pending) == in_flight:
            pending.pop(0).result()
        pending.append(stub.Batch.future(request, timeout=120))
    for future in pending:
        future.result()


def param_columns(part: list[tuple[int, str, int]]) -> pb.ParamColumns:
    ids, names, values = zip(*part, strict=True)
    return pb.ParamColumns(
        row_count=len(part),
        columns=[
            pb.ParamColumn(int_values=ids),
            pb.ParamColumn(text_values=names),
            pb.ParamColumn(int_values=values),
        ],
    )


def value(x: object) -> pb.Value:
    if isinstance(x, int):
        return pb.Value(int_value=x)
    return pb.Value(text_value=str(x))


def row(i: int) -> tuple[int, str, int]:
    return (i, f"item-{i:08d}", i * 7 % 1000)


# --- raw sqlite3 baselines ---------------------------------------------------------------------


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def raw_insert(path: Path, rows: list[tuple[int, str, int]]) -> float:
    conn = raw_connect(path)
    conn.execute(SCHEMA)
    started = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(INSERT, rows)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


# --- main --------------------------------------------------------------------------------------


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    with open(log, "ab") as out:
        return subprocess.Popen(args, env={**clean, "PYTHONPATH": str(ROOT), **env}, cwd=ROOT, stdout=out, stderr=out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in seconds")
    parser.add_argument("--serve-echo", metavar="ADDRESS", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:
        serve_echo(args.serve_echo)
        return
    quick = args.quick or os.environ.get("STRATA_BENCH_QUICK") in ("1", "true", "yes")
    total = 10_000 if quick else 100_000
    chunk = 1000
    point_calls = 300 if quick else 3000
    qps_seconds = 1.0 if quick else 5.0

    work = Path(tempfile.mkdtemp(prefix="strata-bench-metadata-"))
    service_address = f"127.0.0.1:{free_port()}"
    echo_address = f"127.0.0.1:{free_port()}"
    env = {
        "STRATA_DATA_DIR": str(work / "data"),
        "STRATA_METADATA_LISTEN": service_address,
        "STRATA_LOG_LEVEL": "warning",
    }
    service = spawn([sys.executable, "-m", "services.metadata"], env, work / "service.log")
    echo = spawn([sys.executable, str(Path(__file__).resolve()), "--serve-echo", echo_address], {}, work / "echo.log")
    try:
        wait_serving(service_address)
        wait_serving(echo_address)
        rows = [row(i) for i in range(1, total + 1)]
        results: list[tuple[str, str, str]] = []

        # 1. bulk insert, best of REPEATS for each side (other work on the machine only ever slows a run down).
        # Two forms of the same Batch: one bulk statement binding 1,000 rows as typed columns (the
        # target), and 1,000 statements with one Value per parameter (for comparison).
        forms: dict[str, list[pb.BatchRequest]] = {"bulk": [], "bulk-sequential": [], "statements": []}
        for start in range(0, total, chunk):
            chunk_rows = rows[start : start + chunk]
            bulk = pb.Statement(sql=INSERT, columns=param_columns(chunk_rows))
            forms["bulk"].append(pb.BatchRequest(statements=[bulk]))
            forms["bulk-sequential"].append(pb.BatchRequest(statements=[bulk]))
            request = pb.BatchRequest()
            for r in chunk_rows:
                request.statements.add(sql=INSERT, params=[value(x) for x in r])
            forms["statements"].append(request)
        raw_runs: list[float] = []
        runs: dict[str, list[float]] = {form: [] for form in forms}
        with grpc.insecure_channel(service_address) as channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            for attempt in range(REPEATS):
                raw_runs.append(raw_insert(work / f"raw-{attempt}.db", rows))
                for form, requests in forms.items():
                    database = "bench" if (attempt, form) == (REPEATS - 1, "bulk") else f"bench-{form}-{attempt}"
                    stub.CreateDatabase(pb.CreateDatabaseRequest(name=database))
                    stub.Query(pb.QueryRequest(database=database, sql=SCHEMA))
                    for request in requests:
                        request.database = database
                    started = time.perf_counter()
                    send_batches(stub, requests, IN_FLIGHT if form == "bulk" else 1)
                    runs[form].append(time.perf_counter() - started)
        raw_rate = total / min(raw_runs)
        bulk_rate, statements_rate = total / min(runs["bulk"]), total / min(runs["statements"])
        sequential_rate = total / min(runs["bulk-sequential"])
        ratio = bulk_rate / raw_rate
        results.append(
            (
                f"insert {total:,} rows (best of {REPEATS})",
                f"Batch, one {chunk}-row bulk statement each, {IN_FLIGHT} calls in flight: {bulk_rate:,.0f} rows/s"
                f" | raw executemany in one transaction: {raw_rate:,.0f} rows/s | the same one call at a time: "
                f"{sequential_rate:,.0f} rows/s | Batch of {chunk} one-row statements: {statements_rate:,.0f} rows/s",
                f"ratio {ratio:.2f}x (target >= {INSERT_TARGET}x) {'PASS' if ratio >= INSERT_TARGET else 'MISS'}"
                f"; medians {total / statistics.median(runs['bulk']):,.0f} vs "
                f"{total / statistics.median(raw_runs):,.0f}; one at a time {sequential_rate / raw_rate:.2f}x; "
                f"one-row statements {statements_rate / raw_rate:.2f}x",
            )
        )

        # 2. point query p50: service vs echo vs raw
        rng = random.Random(5)
        keys = [rng.randint(1, total) for _ in range(point_calls)]
        with grpc.insecure_channel(service_address) as channel, grpc.insecure_channel(echo_address) as echo_channel:
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            echo_stub = metadata_pb2_grpc.MetadataServiceStub(echo_channel)

            def service_call(key: int) -> object:
                return stub.Query(pb.QueryRequest(database="bench", sql=POINT, params=[pb.Value(int_value=key)]))

            def echo_call(key: int) -> object:
                return echo_stub.Query(pb.QueryRequest(database="bench", sql=POINT, params=[pb.Value(int_value=key)]))

            for _ in range(100):
                service_call(1)
                echo_call(1)
            # Interleave rounds of the two so machine noise hits both alike; the overhead is the
            # median over rounds of (service p50 - echo p50).
            service_samples, echo_samples, differences = [], [], []
            for part in range(0, len(keys), ROUND):
                service_round = timed_calls(service_call, keys[part : part + ROUND])
                echo_round = timed_calls(echo_call, keys[part : part + ROUND])
                differences.append(p50_ms(service_round) - p50_ms(echo_round))
                service_samples += service_round
                echo_samples += echo_round
        raw = raw_connect(work / f"raw-{REPEATS - 1}.db")
        raw_samples = timed_calls(lambda key: raw.execute(POINT, (key,)).fetchall(), keys)
        raw.close()
        overhead = statistics.median(differences)
        results.append(
            (
                "point query p50",
                f"service {p50_ms(service_samples):.3f} ms | empty gRPC echo {p50_ms(echo_samples):.3f} ms | "
                f"raw sqlite3 {p50_ms(raw_samples):.4f} ms",
                f"overhead {overhead:.3f} ms (target <= {OVERHEAD_TARGET_MS} ms) "
                f"{'PASS' if overhead <= OVERHEAD_TARGET_MS else 'MISS'}",
            )
        )

        # 3. 10-id IN lookups with 8 concurrent clients
        def service_worker(index: int) -> Callable[[], object]:
            channel = grpc.insecure_channel(service_address)
            stub = metadata_pb2_grpc.MetadataServiceStub(channel)
            rng = random.Random(index)

            def call() -> object:
                ids = [pb.Value(int_value=rng.randint(1, total)) for _ in range(10)]
                return stub.Query(pb.QueryRequest(database="bench", sql=IN_10, params=ids))

            return call

        def raw_worker(index: int) -> Callable[[], object]:
            conn = raw_connect(work / f"raw-{REPEATS - 1}.db")
            rng = random.Random(index)
            return lambda: conn.execute(IN_10, [rng.randint(1, total) for _ in range(10)]).fetchall()

        service_qps = qps(service_worker, qps_seconds)
        raw_qps = qps(raw_worker, qps_seconds)
        results.append(
            (
                f"IN (10 ids), {CLIENTS} clients",
                f"service {service_qps:,.0f} queries/s | raw sqlite3, {CLIENTS} threads: {raw_qps:,.0f} queries/s",
                f"ratio {service_qps / raw_qps:.3f}x (no target; reported)",
            )
        )
        # 4. one-row write transactions from CLIENTS clients at once: the server commits them in groups
        ids = itertools.count(total + 1)

        def service_writer(index: int) -> Callable[[], object]:
            stub = metadata_pb2_grpc.MetadataServiceStub(grpc.insecure_channel(service_address))
            return lambda: stub.Query(
                pb.QueryRequest(database="bench", sql=INSERT, params=[value(x) for x in row(next(ids))])
            )

        def raw_writer(index: int) -> Callable[[], object]:
            conn = raw_connect(work / f"raw-{REPEATS - 1}.db")
            conn.execute("PRAGMA busy_timeout=10000")
            return lambda: conn.execute(INSERT, row(next(ids)))

        service_commits = qps(service_writer, qps_seconds)
        raw_commits = qps(raw_writer, qps_seconds)
        results.append(
            (
                f"one-row inserts, {CLIENTS} clients",
                f"service {service_commits:,.0f} commits/s | raw sqlite3, {CLIENTS} threads in autocommit: "
                f"{raw_commits:,.0f} commits/s",
                f"ratio {service_commits / raw_commits:.2f}x (no target; reported: group commit)",
            )
        )
    finally:
        for proc in (service, echo):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"metadata benchmark ({'quick' if quick else 'full'}; sqlite backend; {os.cpu_count()} CPUs, shared: noisy)")
    for name, figures, verdict in results:
        print(f"- {name}: {figures}\n    {verdict}")


if __name__ == "__main__":
    main()
