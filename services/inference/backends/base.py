"""The one interface every inference backend implements."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from services.inference.domain import ChatMessage, Embedding, GenerationEvent, ModelInfo, SamplingOptions


class InferenceBackend(Protocol):
    """Runs embedding and generation models; the core does everything else.

    The core validates requests (model names, tasks, batch sizes, roles, sampling
    ranges), micro-batches Embed calls, queues generations and computes rerank
    scores from embeddings, so a backend only runs models. Model names passed in
    are always ones the backend listed in `models()` for the right task.

    Every method raises `services.runtime.errors` types, never a library's own
    exceptions: each backend translates those in one place. Blocking work must
    not run on the event loop.
    """

    #: Short name shown in ListModels, e.g. "local" or "openai".
    name: str
    #: How many `embed` calls may run at once (1 for an in-process model that uses every core).
    embed_concurrency: int
    #: How many generations may run at once.
    generation_concurrency: int

    def models(self) -> Sequence[ModelInfo]:
        """The embedding and generation models, the defaults first. Rerank is added by the core."""
        ...

    async def open(self) -> None:
        """Load models or connect; raise FailedPrecondition/Unavailable saying what is missing."""
        ...

    async def probe(self) -> bool:
        """True when models can be run now (for the health service)."""
        ...

    async def close(self) -> None:
        """Release models, threads and connections."""
        ...

    async def embed(self, model: str, texts: Sequence[str]) -> list[Embedding]:
        """One L2-normalised vector per text, in order; long texts are cut to the model's limit
        and marked `truncated`."""
        ...

    async def count_tokens(self, model: str, texts: Sequence[str]) -> list[int]:
        """Tokens per text in the model's own tokenizer, without special tokens, not truncated.
        A backend without the tokenizer may estimate; its docstring says how."""
        ...

    def generate(
        self, model: str, messages: Sequence[ChatMessage], options: SamplingOptions
    ) -> AsyncIterator[GenerationEvent]:
        """Deltas as they are produced, then exactly one Done.

        Closing the iterator early (the caller was cancelled) must stop the model's
        work promptly, within about one token.
        """
        ...
