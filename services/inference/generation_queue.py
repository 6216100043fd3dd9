"""A bounded queue for generation: a few run, a few wait, the rest are turned away.

An unbounded backlog of generations only makes every caller wait longer than
its deadline; RESOURCE_EXHAUSTED lets clients back off or go elsewhere.
"""

from __future__ import annotations

import asyncio

from services.runtime.errors import ResourceExhausted


class GenerationQueue:
    def __init__(self, running: int, waiting: int) -> None:
        self._slots = asyncio.Semaphore(running)
        self._running = running
        self._waiting = waiting
        self._admitted = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    def enter(self) -> Ticket:
        """A place in the queue, or ResourceExhausted when all places are taken."""
        if self._admitted >= self._running + self._waiting:
            raise ResourceExhausted(
                f"the generation queue is full ({self._running} running, {self._waiting} waiting); retry later",
                reason="GENERATION_QUEUE_FULL",
                metadata={"running": str(self._running), "waiting": str(self._waiting)},
            )
        self._admitted += 1
        return Ticket(self)


class Ticket:
    def __init__(self, queue: GenerationQueue) -> None:
        self._queue = queue
        self._holding = False
        self._left = False

    async def wait_turn(self) -> None:
        await self._queue._slots.acquire()
        self._holding = True

    def leave(self) -> None:
        if self._left:
            return
        self._left = True
        self._queue._admitted -= 1
        if self._holding:
            self._holding = False
            self._queue._slots.release()
