"""Vector service on its Milvus backend: each figure beside pymilvus calling the same Milvus
directly, in the same run.

A Milvus Lite server and the vector service (STRATA_VECTOR_BACKEND=milvus) run in their own
processes; vectors of 384 dimensions, cosine, clustered, in two namespaces.

- ListVectors paging through every vector vs pymilvus' query iterator reading the collection
  in the same page size: both read one primary-key range per page (the service keeps primary
  keys in its key order), so the time per page should not grow with the collection.
- Query latency p50, with and without a namespace, vs pymilvus `search` with the same filter.

Milvus Lite reads the whole collection for every query (~30 us per vector here), so the
absolute figures grow with its size and the full run stays at 10k vectors; the ratios are what
this measures.

    .venv/bin/python bench/vector_milvus.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.vector import DIMS, clustered  # noqa: E402
from services.vector.backends.milvus import collection_name  # noqa: E402
from strata.vector.v1 import vector_pb2 as pb  # noqa: E402
from strata.vector.v1 import vector_pb2_grpc  # noqa: E402
from tests.contract.vector.milvus_server import milvus_lite  # noqa: E402
from tests.support.servers import ServerProcess, free_port  # noqa: E402

BATCH = 1000
NAMESPACES = ("tenant-a", "tenant-b")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds taken, result)"""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def list_pages(stub: vector_pb2_grpc.VectorServiceStub, name: str, page: int) -> tuple[int, int]:
    """Page through the whole index; (vectors, pages)."""
    token, vectors, pages = "", 0, 0
    while True:
        reply = stub.ListVectors(
            pb.ListVectorsRequest(index_name=name, page_size=page, page_token=token, return_metadata=True),
            timeout=600,
        )
        vectors, pages, token = vectors + len(reply.vectors), pages + 1, reply.next_page_token
        if not token:
            return vectors, pages


def iterate_pages(client: Any, collection: str, page: int) -> tuple[int, int]:
    """The same with pymilvus' query iterator; (rows, batches)."""
    iterator = client.query_iterator(
        collection, batch_size=page, filter='vid != ""', output_fields=["ns", "vid", "metadata"]
    )
    rows, batches = 0, 0
    try:
        while batch := iterator.next():
            rows, batches = rows + len(batch), batches + 1
    finally:
        iterator.close()
    return rows, batches


def query_p50s(
    stub: vector_pb2_grpc.VectorServiceStub, client: Any, collection: str, queries: np.ndarray, namespace: str
) -> tuple[float, float]:
    """Median ms of a top-10 query through the service and of the same `search` by pymilvus,
    alternating so both see the same load."""
    ours, raw = [], []
    for q in queries:
        request = pb.QueryRequest(index_name="docs", vector=q.tolist(), top_k=10, namespace=namespace)
        ours.append(timed(partial(stub.Query, request))[0])
        search = {
            "data": [q.tolist()],
            "limit": 10,
            "filter": f'ns == "{namespace}"' if namespace else "",
            "output_fields": ["ns", "vid"],
            "search_params": {"metric_type": "COSINE"},
        }
        raw.append(timed(partial(client.search, collection, **search))[0])
    return statistics.median(ours) * 1000, statistics.median(raw) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small run, to check the script works")
    quick = parser.parse_args().quick
    n = 3_000 if quick else 10_000
    n_queries = 20 if quick else 50
    pages = (100,) if quick else (100, 1000)
    print(f"vector benchmark, Milvus backend ({'quick' if quick else 'full'}; {n} x {DIMS} cosine on Milvus Lite)")
    data = clustered(n, seed=2)
    queries = clustered(n_queries, seed=3)
    rows: list[tuple[str, str, str, str]] = []

    with tempfile.TemporaryDirectory(prefix="strata-bench-milvus-") as tmp, milvus_lite(Path(tmp) / "milvus") as uri:
        from pymilvus import MilvusClient

        address = f"127.0.0.1:{free_port()}"
        settings = {
            "STRATA_DATA_DIR": str(Path(tmp) / "data"),
            "STRATA_VECTOR_LISTEN": address,
            "STRATA_VECTOR_BACKEND": "milvus",
            "STRATA_VECTOR_MILVUS_URI": uri,
            "STRATA_LOG_LEVEL": "warning",
        }
        server = ServerProcess("services.vector", settings, address, Path(tmp) / "server.log").start(timeout=120)
        client = MilvusClient(uri=uri)
        try:
            with grpc.insecure_channel(address) as channel:
                stub = vector_pb2_grpc.VectorServiceStub(channel)
                stub.CreateIndex(pb.CreateIndexRequest(name="docs", dimensions=DIMS, metric=pb.METRIC_COSINE))
                for start in range(0, n, BATCH):
                    chunk = data[start : start + BATCH]
                    columns = pb.VectorColumns(
                        ids=[f"v{start + i:07d}" for i in range(len(chunk))],
                        values=np.ascontiguousarray(chunk, dtype="<f4").tobytes(),
                        metadata_json=[f'{{"i":{start + i}}}' for i in range(len(chunk))],
                        namespace=NAMESPACES[(start // BATCH) % 2],
                    )
                    stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="docs", columns=columns), timeout=600)
                collection = collection_name("docs")

                for page in pages:
                    raw_seconds, (raw_rows, batches) = timed(partial(iterate_pages, client, collection, page))
                    ours_seconds, (listed, ours_pages) = timed(partial(list_pages, stub, "docs", page))
                    assert listed == raw_rows == n, (listed, raw_rows, n)
                    per_page, raw_per_page = ours_seconds / ours_pages * 1000, raw_seconds / batches * 1000
                    rows.append(
                        (
                            f"list every vector, pages of {page} (ms per page)",
                            f"{per_page:.1f}",
                            f"{raw_per_page:.1f} (query iterator)",
                            f"{per_page / raw_per_page:.2f}x",
                        )
                    )

                for namespace in ("", NAMESPACES[1]):
                    ours_p50, raw_p50 = query_p50s(stub, client, collection, queries, namespace)
                    rows.append(
                        (
                            "query p50" + (" in a namespace" if namespace else "") + " (ms)",
                            f"{ours_p50:.2f}",
                            f"{raw_p50:.2f} (search)",
                            f"{ours_p50 / raw_p50:.2f}x",
                        )
                    )
        finally:
            client.close()
            server.terminate(60)

    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print(f"{'figure':<{widths[0]}}  {'strata':>{widths[1]}}  {'pymilvus':>{widths[2]}}  ratio")
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  {row[3]}")


if __name__ == "__main__":
    main()
