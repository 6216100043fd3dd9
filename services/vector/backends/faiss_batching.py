"""Micro-batching: concurrent unfiltered queries on one index share one FAISS search call.

No query waits for a timer by default: the first query starts a search at once, and
queries that arrive while it runs are searched together in the next call. With 16
clients this turns 16 small searches into a few large ones that FAISS answers with one
matrix multiply. An optional window trades a little latency for bigger batches.

Under load one more rule keeps batches whole: when a batch of several has just been
answered, the next search waits a moment (at most CATCH_UP_SECONDS) for those callers'
next queries to join the ones already waiting. Without it, 16 clients settle into two
alternating batches, and FAISS pays its fixed per-call cost twice. A lone caller never
waits: its previous batch held one query.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

CATCH_UP_SECONDS = 0.003

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    def __init__(
        self,
        run: Callable[[list[Req]], list[Res]],
        window_seconds: float,
        max_batch: int,
        executor: Executor | None = None,
    ) -> None:
        self._run = run
        self._executor = executor
        self._window = window_seconds
        self._max = max_batch
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._task: asyncio.Task[None] | None = None
        self._wanted = 0  # while catching up: the queue length that ends the wait
        self._enough = asyncio.Event()
        self.calls = 0  # searches run, and requests served by them: their ratio is the mean batch
        self.served = 0

    async def submit(self, request: Req) -> Res:
        future: asyncio.Future[Res] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
        if self._wanted and len(self._pending) >= self._wanted:
            self._enough.set()
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        last = 0
        try:
            while self._pending:
                if self._window:
                    await asyncio.sleep(self._window)
                elif last > 1 and len(self._pending) < self._max:
                    await self._catch_up(min(len(self._pending) + last, self._max))
                batch = [item for item in self._pending[: self._max] if not item[1].done()]
                last = len(batch)
                del self._pending[: self._max]
                if not batch:
                    continue
                self.calls += 1
                self.served += len(batch)
                try:
                    results = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._run, [request for request, _ in batch]
                    )
                except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._task = None

    async def _catch_up(self, wanted: int) -> None:
        self._wanted = wanted
        self._enough.clear()
        try:
            await asyncio.wait_for(self._enough.wait(), CATCH_UP_SECONDS)
        except TimeoutError:
            pass
        finally:
            self._wanted = 0
