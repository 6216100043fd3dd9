"""Pure helpers: stop-sequence splitting, Retry-After parsing, token estimates."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from services.inference.backends.openai import estimate_tokens, retry_after_seconds
from services.inference.smollm import split_at_stop


@pytest.mark.parametrize(
    ("text", "stops", "final", "expected"),
    [
        ("hello world", ("wor",), False, ("hello ", "", True)),
        ("hello wo", ("world",), False, ("hello ", "wo", False)),
        ("hello wo", ("world",), True, ("hello wo", "", False)),
        ("abc", (), False, ("abc", "", False)),
        ("say END and STOP", ("STOP", "END"), False, ("say ", "", True)),
        ("x\n\n", ("\n\nUser:",), False, ("x", "\n\n", False)),
    ],
)
def test_split_at_stop(text, stops, final, expected) -> None:
    assert split_at_stop(text, stops, final) == expected


def response_with(retry_after: str | None) -> httpx.Response:
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return httpx.Response(429, headers=headers)


def test_retry_after_in_seconds_and_as_a_date() -> None:
    assert retry_after_seconds(response_with("3")) == 3.0
    assert retry_after_seconds(response_with("0.5")) == 0.5
    assert retry_after_seconds(response_with(None)) is None
    assert retry_after_seconds(response_with("soon")) is None
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (retry_after_seconds(response_with(in_ten)) or 0) <= 10.5
    past = email.utils.formatdate(time.time() - 100, usegmt=True)
    assert retry_after_seconds(response_with(past)) == 0.0


def test_token_estimate_is_four_bytes_a_token() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("é" * 4) == 2  # 8 UTF-8 bytes


def test_generation_queue_counts_and_limits() -> None:
    import asyncio

    from services.inference.generation_queue import GenerationQueue
    from services.runtime.errors import ResourceExhausted

    async def main() -> None:
        queue = GenerationQueue(running=1, waiting=1)
        first, second = queue.enter(), queue.enter()
        with pytest.raises(ResourceExhausted):
            queue.enter()
        await first.wait_turn()
        waiter = asyncio.create_task(second.wait_turn())
        await asyncio.sleep(0)
        assert (queue.running, queue.admitted) == (1, 2) and not waiter.done()
        first.leave()
        first.leave()  # idempotent
        await waiter
        assert (queue.running, queue.admitted) == (1, 1)
        second.leave()
        assert (queue.running, queue.admitted) == (0, 0)
        queue.enter().leave()  # leaving before its turn frees the place too
        assert queue.admitted == 0

    asyncio.run(main())


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (404, True), (401, False), (403, False), (503, False)])
def test_openai_probe_reads_the_models_endpoint(tmp_path, status, healthy) -> None:
    import asyncio

    from services.inference.backends.openai import OpenAIBackend
    from services.inference.config import InferenceSettings

    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(status, json={"data": []})

    async def main() -> bool:
        settings = InferenceSettings(data_dir=tmp_path, backend="openai", openai_base_url="http://upstream.test/v1")
        backend = OpenAIBackend(settings, transport=httpx.MockTransport(answer))
        await backend.open()
        try:
            return await backend.probe()
        finally:
            await backend.close()

    assert asyncio.run(main()) is healthy
    assert seen == ["/v1/models"]
