"""The core over the real local backend, without gRPC: micro-batching really merges model calls."""

from __future__ import annotations

import asyncio

from services.inference.backends.local import LocalBackend
from services.inference.config import InferenceSettings
from services.inference.core import InferenceCore


def run_core(settings: InferenceSettings, calls: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        core = InferenceCore(settings, LocalBackend(settings))
        await core.open()
        try:
            texts = [f"Sentence {i} for the batching test." for i in range(calls)]
            replies = await asyncio.gather(*(core.embed("", [t], reject_over_limit=False) for t in texts))
            assert all(len(embeddings) == 1 and len(embeddings[0].values) == 384 for _, embeddings in replies)
            return core.gauges()
        finally:
            await core.close()

    return asyncio.run(main())


def test_concurrent_embeds_share_model_calls(tmp_path) -> None:
    gauges = run_core(InferenceSettings(data_dir=tmp_path, batch_max_size=8), calls=24)
    assert gauges["embed_batched_texts"] == 24
    # The first call runs alone; the rest queue behind it and go 8 at a time.
    assert gauges["embed_batches"] <= 5


def test_batch_size_one_turns_batching_off(tmp_path) -> None:
    gauges = run_core(InferenceSettings(data_dir=tmp_path, batch_max_size=1), calls=4)
    assert gauges["embed_batches"] == 0
