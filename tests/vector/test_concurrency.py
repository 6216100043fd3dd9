"""Queries during writes see whole batches only; concurrent queries are micro-batched."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from services.vector.backends.faiss_batching import MicroBatcher
from strata.vector.v1 import vector_pb2
from tests.contract.vector.helpers import struct, vec

pb = vector_pb2
BATCH = 50


def test_readers_never_see_half_a_batch(open_vector: Callable[..., Any]) -> None:
    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="live", dimensions=8, metric=pb.METRIC_DOT_PRODUCT))
        done = threading.Event()
        written = [0]
        rng = np.random.default_rng(3)

        def writer() -> None:
            for b in range(40):
                values = rng.standard_normal((BATCH, 8)).tolist()
                batch = [vec(f"b{b}-{i}", values[i], {"batch": b}) for i in range(BATCH)]
                stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="live", vectors=batch))
                written[0] = b + 1
            done.set()

        observations = 0
        thread = threading.Thread(target=writer)
        thread.start()
        while not done.is_set() or observations < 20:
            count = stub.GetIndex(pb.GetIndexRequest(name="live")).index.vector_count
            assert count % BATCH == 0, count
            latest = written[0]
            matches = stub.Query(
                pb.QueryRequest(index_name="live", vector=[1] * 8, top_k=100, filter=struct({"batch": latest}))
            ).matches
            assert len(matches) in (0, BATCH)
            observations += 1
        thread.join()


def test_concurrent_queries_match_sequential_answers(open_vector: Callable[..., Any]) -> None:
    rng = np.random.default_rng(5)
    data = rng.standard_normal((2000, 16)).astype(np.float32)
    queries = rng.standard_normal((64, 16)).astype(np.float32)
    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="q", dimensions=16, metric=pb.METRIC_EUCLIDEAN))
        stub.UpsertVectors(
            pb.UpsertVectorsRequest(index_name="q", vectors=[vec(f"v{i}", row.tolist()) for i, row in enumerate(data)])
        )

        def ask(i: int) -> list[str]:
            k = 1 + i % 20
            request = pb.QueryRequest(index_name="q", vector=queries[i].tolist(), top_k=k)
            return [m.id for m in stub.Query(request).matches]

        sequential = [ask(i) for i in range(len(queries))]
        with ThreadPoolExecutor(16) as pool:
            concurrent = list(pool.map(ask, range(len(queries))))
        assert concurrent == sequential
        exact = np.argsort(((data[None, :, :] - queries[:, None, :]) ** 2).sum(-1), axis=1)
        assert sequential == [[f"v{j}" for j in exact[i, : 1 + i % 20]] for i in range(len(queries))]


def test_micro_batcher_groups_waiting_requests() -> None:
    calls: list[list[int]] = []

    def run(requests: list[int]) -> list[int]:
        calls.append(list(requests))
        time.sleep(0.02)  # a search long enough for the others to queue up
        return [r * 10 for r in requests]

    async def main() -> list[int]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, 0.0, 8)
        return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    assert asyncio.run(main()) == [i * 10 for i in range(20)]
    assert sorted(r for call in calls for r in call) == list(range(20))
    assert len(calls) < 20 and max(len(c) for c in calls) == 8


def test_micro_batcher_keeps_concurrent_callers_in_one_batch() -> None:
    """16 callers that each ask again as soon as they are answered end up searched together,
    instead of settling into two alternating half-size batches."""
    sizes: list[int] = []

    def run(requests: list[int]) -> list[int]:
        sizes.append(len(requests))
        time.sleep(0.01)  # a search: the next queries arrive while it runs
        return requests

    async def main() -> None:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, 0.0, 64)

        async def caller(i: int) -> None:
            await asyncio.sleep(i * 0.002)  # staggered start: the shape that splits batches
            for _ in range(30):
                await batcher.submit(i)
                await asyncio.sleep(0.0005)  # the round trip back to the caller and in again

        await asyncio.gather(*(caller(i) for i in range(16)))

    asyncio.run(main())
    steady = sizes[len(sizes) // 2 :]
    assert sum(steady) / len(steady) >= 12, sizes


def test_micro_batcher_never_holds_a_lone_caller() -> None:
    def run(requests: list[int]) -> list[int]:
        return requests

    async def main() -> float:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, 0.0, 64)
        started = time.perf_counter()
        for i in range(200):
            await batcher.submit(i)
        return (time.perf_counter() - started) / 200

    # Each call is a thread hop; a catch-up wait (3 ms) on any of them would show.
    assert asyncio.run(main()) < 0.002


def test_micro_batcher_hands_errors_to_every_caller() -> None:
    def run(requests: list[int]) -> list[int]:
        raise ValueError("boom")

    async def main() -> list[Any]:
        batcher: MicroBatcher[int, int] = MicroBatcher(run, 0.001, 8)
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results)


def test_queries_do_not_wait_for_slow_log_writes(
    open_vector: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.vector.backends import faiss_storage

    with open_vector() as stub:
        stub.CreateIndex(pb.CreateIndexRequest(name="slow", dimensions=4, metric=pb.METRIC_EUCLIDEAN))
        stub.UpsertVectors(pb.UpsertVectorsRequest(index_name="slow", vectors=[vec("a", [1, 0, 0, 0])]))
        release = threading.Event()
        real = faiss_storage.os.fdatasync

        def stuck_fsync(fd: int) -> None:
            release.wait(30)  # a disk that stalls
            real(fd)

        monkeypatch.setattr(faiss_storage.os, "fdatasync", stuck_fsync)
        with ThreadPoolExecutor(24) as pool:
            writes = [
                pool.submit(
                    stub.UpsertVectors, pb.UpsertVectorsRequest(index_name="slow", vectors=[vec(f"w{i}", [0, 1, 0, 0])])
                )
                for i in range(24)
            ]
            try:
                for _ in range(5):
                    started = time.monotonic()
                    matches = stub.Query(pb.QueryRequest(index_name="slow", vector=[1, 0, 0, 0], top_k=5), timeout=10)
                    assert time.monotonic() - started < 2
                    assert [m.id for m in matches.matches] == ["a"]  # nothing unlogged is visible
                    filtered = stub.Query(
                        pb.QueryRequest(
                            index_name="slow", vector=[1, 0, 0, 0], top_k=5, filter=struct({"x": {"$ne": 1}})
                        ),
                        timeout=10,
                    )
                    assert [m.id for m in filtered.matches] == ["a"]
                    assert stub.GetIndex(pb.GetIndexRequest(name="slow"), timeout=10).index.vector_count == 1
            finally:
                release.set()
            assert sum(w.result().upserted_count for w in writes) == 24
        assert stub.GetIndex(pb.GetIndexRequest(name="slow")).index.vector_count == 25
