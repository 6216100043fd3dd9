"""MicroBatcher merges concurrent calls, bounds batch size and wait, and isolates callers."""

from __future__ import annotations

import asyncio

import pytest

from services.inference.batching import MicroBatcher


class Recorder:
    def __init__(self, delay: float = 0.01, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay
        self.fail = fail
        self.running = 0
        self.max_running = 0

    async def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
            if self.fail:
                raise RuntimeError("model failed")
            return [t.upper() for t in texts]
        finally:
            self.running -= 1


def run(coro):
    return asyncio.run(coro)


def test_concurrent_calls_share_model_calls_and_keep_their_results() -> None:
    async def main() -> None:
        model = Recorder()
        batcher = MicroBatcher(model, max_size=32, wait_seconds=0.005)
        texts = [[f"t{i}a", f"t{i}b"] for i in range(16)]
        results = await asyncio.gather(*(batcher.submit(t) for t in texts))
        assert results == [[s.upper() for s in t] for t in texts]
        # 32 texts, max 32 per call: far fewer model calls than callers.
        assert len(model.calls) <= 2
        assert max(len(c) for c in model.calls) <= 32
        await batcher.close()

    run(main())


def test_batches_never_exceed_max_size_and_run_one_at_a_time() -> None:
    async def main() -> None:
        model = Recorder()
        batcher = MicroBatcher(model, max_size=5, wait_seconds=0.002)
        results = await asyncio.gather(*(batcher.submit([str(i), str(i)]) for i in range(20)))
        assert [r[0] for r in results] == [str(i) for i in range(20)]
        assert all(len(c) <= 5 for c in model.calls)
        assert model.max_running == 1
        await batcher.close()

    run(main())


def test_a_request_larger_than_max_size_runs_alone() -> None:
    async def main() -> None:
        model = Recorder()
        batcher = MicroBatcher(model, max_size=4, wait_seconds=0)
        assert await batcher.submit(list("abcdefg")) == list("ABCDEFG")
        assert model.calls == [list("abcdefg")]
        await batcher.close()

    run(main())


def test_a_lone_sequential_caller_never_waits() -> None:
    async def main() -> None:
        model = Recorder(delay=0)
        batcher = MicroBatcher(model, max_size=32, wait_seconds=0.5)
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(5):
            await batcher.submit(["x"])
        assert loop.time() - started < 0.5
        await batcher.close()

    run(main())


def test_after_concurrent_batches_the_wait_is_bounded() -> None:
    async def main() -> None:
        model = Recorder(delay=0)
        batcher = MicroBatcher(model, max_size=32, wait_seconds=0.05)
        await asyncio.gather(*(batcher.submit([str(i)]) for i in range(4)))
        assert len(model.calls[-1]) == 4
        # Fewer callers than last time: the batcher waits for the others, but only 50 ms.
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(["alone"])
        assert 0.04 <= loop.time() - started < 1.0
        # Now it expects one caller and does not wait again.
        started = loop.time()
        await batcher.submit(["alone again"])
        assert loop.time() - started < 0.04
        await batcher.close()

    run(main())


def test_callers_returning_within_the_wait_join_one_batch() -> None:
    async def main() -> None:
        model = Recorder(delay=0.01)
        batcher = MicroBatcher(model, max_size=32, wait_seconds=0.2)

        async def client(name: str) -> None:
            for round_ in range(5):
                await batcher.submit([f"{name}-{round_}"])

        await asyncio.gather(*(client(f"c{i}") for i in range(8)))
        # After the first call or two, all eight clients share each model call.
        assert max(len(c) for c in model.calls) == 8
        assert len(model.calls) <= 8
        await batcher.close()

    run(main())


def test_a_failure_reaches_every_caller_of_the_batch() -> None:
    async def main() -> None:
        batcher = MicroBatcher(Recorder(fail=True), max_size=32, wait_seconds=0.005)
        results = await asyncio.gather(*(batcher.submit(["a"]) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        await batcher.close()

    run(main())


def test_a_cancelled_caller_is_skipped() -> None:
    async def main() -> None:
        model = Recorder(delay=0.05)
        batcher = MicroBatcher(model, max_size=32, wait_seconds=0)
        first = asyncio.create_task(batcher.submit(["busy"]))
        await asyncio.sleep(0.01)  # the model is now running "busy"
        gone = asyncio.create_task(batcher.submit(["gone"]))
        await asyncio.sleep(0)
        gone.cancel()
        kept = await batcher.submit(["kept"])
        assert kept == ["KEPT"] and await first == ["BUSY"]
        assert ["gone"] not in model.calls and all("gone" not in c for c in model.calls)
        with pytest.raises(asyncio.CancelledError):
            await gone
        await batcher.close()

    run(main())
