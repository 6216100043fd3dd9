"""The default backend: models shipped in PyPI packages, run in this process.

Embeddings: all-MiniLM-L6-v2 int8 ONNX (`services.inference.minilm`). Generation:
SmolLM2-135M-Instruct GGUF on llama.cpp (`services.inference.smollm`). Each model
has its own single worker thread, so model work never runs on the event loop and
two calls never fight over the same cores.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from services.inference.config import InferenceSettings
from services.inference.domain import ChatMessage, Embedding, GenerationEvent, ModelInfo, SamplingOptions, Task
from services.runtime.errors import FailedPrecondition, InvalidArgument, StrataError, Unavailable

if TYPE_CHECKING:
    from services.inference.minilm import MiniLMEmbedder
    from services.inference.smollm import SmolLMGenerator

_END = object()


@contextlib.contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """onnxruntime / tokenizers / llama.cpp failures as domain errors, in one place."""
    try:
        yield
    except StrataError:
        raise
    except ImportError as exc:
        raise FailedPrecondition(
            f"{what}: a model runtime is not installed ({exc.name}); install it with "
            "`pip install llama-cpp-python==0.3.36` for generation, or reinstall strata for embeddings",
            reason="MODEL_RUNTIME_MISSING",
        ) from exc
    except ValueError as exc:
        # llama.cpp raises ValueError for prompts longer than its context window.
        raise InvalidArgument(f"{what}: {exc}", reason="MODEL_REJECTED_INPUT") from exc
    except (RuntimeError, OSError, MemoryError) as exc:
        raise Unavailable(f"{what} failed in the model runtime: {exc}", reason="MODEL_RUNTIME_ERROR") from exc


class LocalBackend:
    name = "local"
    embed_concurrency = 1
    generation_concurrency = 1

    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        self._embedder: MiniLMEmbedder | None = None
        self._generator: SmolLMGenerator | None = None
        self._embed_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embed")
        self._generate_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="generate")

    def models(self) -> Sequence[ModelInfo]:
        from services.inference import minilm, smollm

        return (
            ModelInfo(
                name=self.settings.embedding_model,
                task=Task.EMBEDDING,
                dimensions=minilm.DIMENSIONS,
                max_input_tokens=minilm.MAX_INPUT_TOKENS,
                backend=self.name,
                description="sentence-transformers/all-MiniLM-L6-v2, int8 ONNX on onnxruntime; mean pooling, "
                "L2-normalised, inputs truncated at 256 WordPiece tokens.",
            ),
            ModelInfo(
                name=self.settings.generation_model,
                task=Task.GENERATION,
                dimensions=0,
                max_input_tokens=self.settings.context_tokens,
                backend=self.name,
                description=f"HuggingFaceTB/SmolLM2-135M-Instruct ({smollm.QUANTIZATION} GGUF) on llama.cpp; "
                "max_input_tokens is the context window shared by prompt and answer; unset sampling options "
                f"default to temperature {smollm.DEFAULT_TEMPERATURE}, top_p {smollm.DEFAULT_TOP_P}.",
            ),
        )

    async def open(self) -> None:
        from services.inference.minilm import MiniLMEmbedder
        from services.inference.smollm import SmolLMGenerator

        loop = asyncio.get_running_loop()
        with translated_errors("loading the embedding model"):
            embed_load = loop.run_in_executor(
                self._embed_thread,
                lambda: MiniLMEmbedder(self.settings.embedding_threads, self.settings.batch_max_size),
            )
            generate_load = loop.run_in_executor(
                self._generate_thread,
                lambda: SmolLMGenerator(self.settings.generation_threads, self.settings.context_tokens),
            )
            self._embedder, self._generator = await asyncio.gather(embed_load, generate_load)

    async def probe(self) -> bool:
        return self._embedder is not None and self._generator is not None

    async def close(self) -> None:
        if self._generator is not None:
            self._generator.stop()
        # Waiting for the model threads must not block the event loop either.
        await asyncio.to_thread(self._embed_thread.shutdown, wait=True, cancel_futures=True)
        await asyncio.to_thread(self._generate_thread.shutdown, wait=True, cancel_futures=True)
        if self._generator is not None:
            self._generator.close()
        self._embedder = self._generator = None

    def _require_embedder(self) -> MiniLMEmbedder:
        if self._embedder is None:
            raise Unavailable("the embedding model is not loaded", reason="MODEL_NOT_LOADED")
        return self._embedder

    def _require_generator(self) -> SmolLMGenerator:
        if self._generator is None:
            raise Unavailable("the generation model is not loaded", reason="MODEL_NOT_LOADED")
        return self._generator

    async def embed(self, model: str, texts: Sequence[str]) -> list[Embedding]:
        embedder = self._require_embedder()
        loop = asyncio.get_running_loop()
        with translated_errors("embedding"):
            return await loop.run_in_executor(self._embed_thread, embedder.embed, texts)

    async def count_tokens(self, model: str, texts: Sequence[str]) -> list[int]:
        with translated_errors("tokenizing"):
            # Off the loop: a full batch of long chunks takes tens of milliseconds to count.
            if model == self.settings.generation_model:
                return await asyncio.to_thread(self._require_generator().count_tokens, texts)
            return await asyncio.to_thread(self._require_embedder().count_tokens, texts)

    async def generate(
        self, model: str, messages: Sequence[ChatMessage], options: SamplingOptions
    ) -> AsyncIterator[GenerationEvent]:
        generator = self._require_generator()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed under us: nobody is listening
                loop.call_soon_threadsafe(events.put_nowait, item)

        def work() -> None:
            try:
                with translated_errors("generation"):
                    generator.generate(messages, options, emit, cancelled)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                emit(exc)
            finally:
                emit(_END)

        running = loop.run_in_executor(self._generate_thread, work)
        try:
            while True:
                item = await events.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Runs on completion, error and cancellation alike: the model stops at its next token.
            cancelled.set()
            if not running.done():
                running.add_done_callback(lambda f: f.exception())
