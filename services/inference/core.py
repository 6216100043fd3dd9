"""The inference service's logic, independent of gRPC: validation, model routing,
micro-batching, the generation queue and rerank."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence

import numpy as np

from services.inference.backends.base import InferenceBackend
from services.inference.batching import MicroBatcher
from services.inference.config import InferenceSettings
from services.inference.domain import (
    ChatMessage,
    Done,
    Embedding,
    Generation,
    GenerationEvent,
    ModelInfo,
    SamplingOptions,
    Task,
)
from services.inference.generation_queue import GenerationQueue
from services.runtime.errors import InvalidArgument, NotFound

MAX_STOP_SEQUENCES = 4


def _a(word: str) -> str:
    """The word with its indefinite article ("an embedding", "a generation")."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


class InferenceCore:
    """What every RPC does, over one backend."""

    def __init__(self, settings: InferenceSettings, backend: InferenceBackend) -> None:
        self.settings = settings
        self.backend = backend
        self._batchers: dict[str, MicroBatcher[Embedding]] = {}
        self._models: list[ModelInfo] | None = None
        self._queue = GenerationQueue(
            running=min(settings.generation_concurrency, backend.generation_concurrency),
            waiting=settings.generation_queue_depth,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        await self.backend.open()

    async def probe(self) -> bool:
        return await self.backend.probe()

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        await self.backend.close()

    def gauges(self) -> dict[str, float]:
        """Figures for /metrics (exported as strata_backend_<name>)."""
        return {
            "generation_running": self._queue.running,
            "generation_waiting": self._queue.admitted - self._queue.running,
            "embed_batches": sum(b.batches for b in self._batchers.values()),
            "embed_batched_texts": sum(b.texts for b in self._batchers.values()),
        }

    # -- models ----------------------------------------------------------------------------

    def models(self, task: Task | None = None) -> list[ModelInfo]:
        if self._models is None:
            self._models = self._list_models()
        return [m for m in self._models if task is None or m.task is task]

    def _list_models(self) -> list[ModelInfo]:
        """The backend's models plus the rerank model; fixed for the server's life."""
        listed = list(self.backend.models())
        embedding = next((m for m in listed if m.task is Task.EMBEDDING and m.is_default), None)
        if embedding is not None:
            listed.append(
                ModelInfo(
                    name=self.settings.rerank_model,
                    task=Task.RERANK,
                    dimensions=0,
                    max_input_tokens=embedding.max_input_tokens,
                    backend=embedding.backend,
                    description=(
                        f"Ranks documents by cosine similarity between {embedding.name} embeddings of the query "
                        "and of each document (a bi-encoder: no cross-encoder model ships in a package)."
                    ),
                    is_default=True,
                )
            )
        return listed

    def resolve(self, name: str, task: Task) -> ModelInfo:
        """The model called `name` (or the task's default when empty), checked to do `task`."""
        models = self.models()
        if not name:
            for model in models:
                if model.task is task and model.is_default:
                    return model
            raise NotFound(f"this server has no {task.value} model", reason="NO_MODEL_FOR_TASK")
        for model in models:
            if model.name == name:
                if model.task is not task:
                    raise InvalidArgument(
                        f"model {name!r} is {_a(model.task.value)} model, not {_a(task.value)} model",
                        reason="WRONG_MODEL_TASK",
                        metadata={"model": name, "task": model.task.value},
                    )
                return model
        known = ", ".join(sorted(m.name for m in models if m.task is task))
        raise NotFound(
            f"unknown {task.value} model {name!r}; this server has: {known}",
            reason="MODEL_NOT_FOUND",
            metadata={"model": name},
        )

    def _embedding_model_for_rerank(self) -> ModelInfo:
        return self.resolve("", Task.EMBEDDING)

    # -- embeddings --------------------------------------------------------------------------

    def _check_batch(self, what: str, items: Sequence[str]) -> None:
        if not items:
            raise InvalidArgument(f"{what} is empty; send at least one", reason="EMPTY_INPUT")
        if len(items) > self.settings.max_inputs:
            raise InvalidArgument(
                f"{what} has {len(items)} items; the maximum is {self.settings.max_inputs}",
                reason="TOO_MANY_INPUTS",
                metadata={"count": str(len(items)), "maximum": str(self.settings.max_inputs)},
            )

    async def _embed(self, model: ModelInfo, texts: Sequence[str]) -> list[Embedding]:
        if self.settings.batch_max_size <= 1:
            return await self.backend.embed(model.name, texts)
        batcher = self._batchers.get(model.name)
        if batcher is None:
            name = model.name

            async def run(batch: list[str]) -> list[Embedding]:
                return await self.backend.embed(name, batch)

            batcher = MicroBatcher(
                run,
                max_size=self.settings.batch_max_size,
                wait_seconds=self.settings.batch_wait_ms / 1000,
                concurrency=self.backend.embed_concurrency,
            )
            self._batchers[model.name] = batcher
        return await batcher.submit(texts)

    async def embed(
        self, model_name: str, inputs: Sequence[str], *, reject_over_limit: bool
    ) -> tuple[ModelInfo, list[Embedding]]:
        model = self.resolve(model_name, Task.EMBEDDING)
        self._check_batch("inputs", inputs)
        embeddings = await self._embed(model, inputs)
        if reject_over_limit:
            cut = [i for i, e in enumerate(embeddings) if e.truncated]
            if cut:
                counts = await self.backend.count_tokens(model.name, [inputs[cut[0]]])
                raise InvalidArgument(
                    f"input {cut[0]} has {counts[0]} tokens (without special tokens); model {model.name!r} reads "
                    f"at most {model.max_input_tokens} including special tokens, and truncation is "
                    "TRUNCATION_NONE",
                    reason="INPUT_TOO_LONG",
                    metadata={"index": str(cut[0]), "max_input_tokens": str(model.max_input_tokens)},
                )
        return model, embeddings

    async def tokenize(self, model_name: str, inputs: Sequence[str]) -> tuple[ModelInfo, list[int]]:
        models = {m.name: m for m in self.models()}
        model = models.get(model_name) if model_name else self.resolve("", Task.EMBEDDING)
        if model is None:
            raise NotFound(
                f"unknown model {model_name!r}; this server has: {', '.join(sorted(models))}",
                reason="MODEL_NOT_FOUND",
                metadata={"model": model_name},
            )
        self._check_batch("inputs", inputs)
        counted = self._embedding_model_for_rerank() if model.task is Task.RERANK else model
        return model, await self.backend.count_tokens(counted.name, inputs)

    # -- rerank ------------------------------------------------------------------------------

    async def rerank(
        self, model_name: str, query: str, documents: Sequence[str], top_n: int
    ) -> tuple[ModelInfo, list[tuple[int, float]], int]:
        """(model, [(document index, score)] best first, input tokens)."""
        model = self.resolve(model_name, Task.RERANK)
        if not query:
            raise InvalidArgument("query is empty", reason="EMPTY_QUERY")
        self._check_batch("documents", documents)
        if top_n < 0:
            raise InvalidArgument(f"top_n is {top_n}; it must be 0 (all) or more", reason="INVALID_TOP_N")
        embedder = self._embedding_model_for_rerank()
        vectors = await self._embed(embedder, [query, *documents])
        matrix = np.asarray([v.values for v in vectors[1:]], dtype=np.float32)
        scores = matrix @ np.asarray(vectors[0].values, dtype=np.float32)
        order = sorted(range(len(documents)), key=lambda i: (-float(scores[i]), i))
        if top_n:
            order = order[:top_n]
        tokens = sum(v.token_count for v in vectors)
        return model, [(i, float(scores[i])) for i in order], tokens

    # -- generation --------------------------------------------------------------------------

    def _check_generation(self, messages: Sequence[ChatMessage], options: SamplingOptions) -> SamplingOptions:
        if not messages:
            raise InvalidArgument("messages is empty; send at least one message", reason="EMPTY_MESSAGES")
        for index, message in enumerate(messages):
            if message.role is None:
                raise InvalidArgument(
                    f"message {index} has no role, or one this server does not know; "
                    "use ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT",
                    reason="INVALID_ROLE",
                    metadata={"index": str(index)},
                )
        if options.max_tokens < 0:
            raise InvalidArgument(
                f"max_tokens is {options.max_tokens}; it must be 0 (server default) or more",
                reason="INVALID_MAX_TOKENS",
            )
        temperature = options.temperature
        if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 2):
            raise InvalidArgument(f"temperature is {temperature}; it must be in [0, 2]", reason="INVALID_TEMPERATURE")
        top_p = options.top_p
        if top_p is not None and not (math.isfinite(top_p) and 0 < top_p <= 1):
            raise InvalidArgument(f"top_p is {top_p}; it must be in (0, 1]", reason="INVALID_TOP_P")
        if len(options.stop) > MAX_STOP_SEQUENCES:
            raise InvalidArgument(
                f"{len(options.stop)} stop sequences; at most {MAX_STOP_SEQUENCES}", reason="TOO_MANY_STOP_SEQUENCES"
            )
        if any(not s for s in options.stop):
            raise InvalidArgument("a stop sequence is empty", reason="EMPTY_STOP_SEQUENCE")
        if options.max_tokens == 0:
            return SamplingOptions(
                max_tokens=self.settings.default_max_tokens,
                temperature=options.temperature,
                top_p=options.top_p,
                stop=options.stop,
                seed=options.seed,
            )
        return options

    async def generate_stream(
        self, model_name: str, messages: Sequence[ChatMessage], options: SamplingOptions
    ) -> tuple[ModelInfo, AsyncIterator[GenerationEvent]]:
        """Validate now; the returned iterator takes a queue place (or raises ResourceExhausted),
        runs the generation and frees the place however it ends."""
        model = self.resolve(model_name, Task.GENERATION)
        checked = self._check_generation(messages, options)

        async def events() -> AsyncIterator[GenerationEvent]:
            ticket = self._queue.enter()
            try:
                await ticket.wait_turn()
                stream = self.backend.generate(model.name, messages, checked)
                try:
                    async for event in stream:
                        yield event
                finally:
                    await stream.aclose()  # type: ignore[attr-defined]
            finally:
                ticket.leave()

        return model, events()

    async def generate(self, model_name: str, messages: Sequence[ChatMessage], options: SamplingOptions) -> Generation:
        model, events = await self.generate_stream(model_name, messages, options)
        result = Generation(model=model.name)
        parts: list[str] = []
        async for event in events:
            if isinstance(event, Done):
                result.done = event
            else:
                parts.append(event.text)
        result.text = "".join(parts)
        return result
