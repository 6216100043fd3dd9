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
        self._run_limit = running
        self._wait_limit = waiting
        self._admitted = 0
        self._holding = 0

    @property
    def admitted(self) -> int:
        """Generations running or waiting."""
        return self._admitted

    @property
    def running(self) -> int:
        """Generations holding a run slot."""
        return self._holding

    def enter(self) -> Ticket:
        """A place in the queue, or ResourceExhausted when all places are taken."""
        if self._admitted >= self._run_limit + self._wait_limit:
            raise ResourceExhausted(
                f"the generation queue is full ({self._run_limit} running, {self._wait_limit} waiting); retry later",
                reason="GENERATION_QUEUE_FULL",
                metadata={"running": str(self._run_limit), "waiting": str(self._wait_limit)},
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
        self._queue._holding += 1

    def leave(self) -> None:
        if self._left:
            return
        self._left = True
        self._queue._admitted -= 1
        if self._holding:
            self._holding = False
            self._queue._holding -= 1
            self._queue._slots.release()
