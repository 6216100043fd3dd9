"""Micro-batching: concurrent Embed calls for one model become one model call.

While a model call runs, new requests queue; when it returns, everything queued
(up to `max_size` texts) goes in the next call. That alone forms batches under
load at no cost in latency. The short wait (a few milliseconds) is for callers we
expect back: those of the previous batch, who resubmit as soon as they get their
answers, plus those already queued. So 16 clients settle into batches of 16
instead of two alternating halves, and a lone sequential caller never waits.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Pending(Generic[T]):
    texts: Sequence[str]
    future: asyncio.Future[list[T]] = field(repr=False)


class MicroBatcher(Generic[T]):
    """Merges `submit` calls into calls of `run`; runs at most `concurrency` calls at once."""

    def __init__(
        self,
        run: Callable[[list[str]], Awaitable[list[T]]],
        *,
        max_size: int,
        wait_seconds: float,
        concurrency: int = 1,
    ) -> None:
        self._run = run
        self._max_size = max_size
        self._wait = wait_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: collections.deque[_Pending[T]] = collections.deque()
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        # Callers of the previous batch (likely to send again as soon as they have their answers),
        # and callers that queued while it ran: together, how many to expect in the next batch.
        self._previous_callers = 0
        self._queued_meanwhile = 0
        # Totals for /metrics: texts / batches is the mean batch size.
        self.batches = 0
        self.texts = 0

    async def submit(self, texts: Sequence[str]) -> list[T]:
        """The results for `texts`, in order, computed together with other callers' texts."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._collect_forever())
        future: asyncio.Future[list[T]] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(texts, future))
        self._arrived.set()
        return await future

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for task in list(self._running):
            task.cancel()
        for item in self._pending:
            item.future.cancel()

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                # Taking a slot first means requests pile up while the model is busy,
                # which is what makes batches form under load at no cost in latency.
                batch = await self._collect(loop)
            except BaseException:
                self._slots.release()
                raise
            self._previous_callers = len(batch)
            self.batches += 1
            self.texts += sum(len(item.texts) for item in batch)
            task = asyncio.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _collect(self, loop: asyncio.AbstractEventLoop) -> list[_Pending[T]]:
        batch: list[_Pending[T]] = []
        size = 0
        deadline: float | None = None
        expected = max(1, self._previous_callers + self._queued_meanwhile)
        while True:
            while self._pending:
                item = self._pending[0]
                if item.future.done():  # the caller went away while queued
                    self._pending.popleft()
                    continue
                if batch and size + len(item.texts) > self._max_size:
                    return batch
                self._pending.popleft()
                batch.append(item)
                size += len(item.texts)
            if size >= self._max_size:
                return batch
            self._arrived.clear()
            if not batch:
                await self._arrived.wait()
                continue
            if len(batch) >= expected:
                return batch
            if deadline is None:
                deadline = loop.time() + self._wait
            remaining = deadline - loop.time()
            if remaining <= 0:
                return batch
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return batch

    async def _execute(self, batch: list[_Pending[T]]) -> None:
        try:
            texts = [text for item in batch for text in item.texts]
            try:
                results = await self._run(texts)
            except Exception as exc:  # noqa: BLE001 - every waiting caller gets the failure
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                return
            self._queued_meanwhile = len(self._pending)
            offset = 0
            for item in batch:
                part = results[offset : offset + len(item.texts)]
                offset += len(item.texts)
                if not item.future.done():
                    item.future.set_result(part)
        finally:
            self._slots.release()
