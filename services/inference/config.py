"""Settings of the inference service, read once from STRATA_INFERENCE_* variables."""

from __future__ import annotations

import os
from dataclasses import dataclass

from services.runtime.settings import RuntimeSettings, setting

_CPUS = os.cpu_count() or 1


@dataclass(frozen=True)
class InferenceSettings(RuntimeSettings):
    """How the inference service listens, which backend runs the models, and how it queues work."""

    listen: str = setting("STRATA_INFERENCE_LISTEN", "127.0.0.1:50051", help="host:port the gRPC server binds.")
    backend: str = setting(
        "STRATA_INFERENCE_BACKEND",
        "local",
        choices=("local", "openai"),
        help="local runs the packaged models in-process; openai forwards to an OpenAI-compatible HTTP server.",
    )
    embedding_model: str = setting(
        "STRATA_INFERENCE_EMBEDDING_MODEL",
        "all-MiniLM-L6-v2",
        help="Name clients use for the default embedding model (with openai: the upstream model name too).",
    )
    generation_model: str = setting(
        "STRATA_INFERENCE_GENERATION_MODEL",
        "SmolLM2-135M-Instruct",
        help="Name clients use for the default generation model (with openai: the upstream model name too).",
    )
    rerank_model: str = setting(
        "STRATA_INFERENCE_RERANK_MODEL",
        "all-MiniLM-L6-v2-rerank",
        help="Name clients use for the rerank model, which scores by embedding cosine similarity.",
    )
    max_inputs: int = setting(
        "STRATA_INFERENCE_MAX_INPUTS",
        256,
        minimum=1,
        maximum=4096,
        help="Most inputs one Embed or Tokenize call, or documents one Rerank call, may carry.",
    )
    batch_wait_ms: float = setting(
        "STRATA_INFERENCE_BATCH_WAIT_MS",
        5.0,
        minimum=0,
        maximum=100,
        help="How long a micro-batch waits for more concurrent Embed calls before it runs; "
        "0 merges only calls already queued.",
    )
    batch_max_size: int = setting(
        "STRATA_INFERENCE_BATCH_MAX_SIZE",
        32,
        minimum=1,
        maximum=1024,
        help="Most texts merged into one embedding model call; 1 turns micro-batching off.",
    )
    generation_queue_depth: int = setting(
        "STRATA_INFERENCE_GENERATION_QUEUE_DEPTH",
        8,
        minimum=0,
        maximum=10_000,
        help="Generation requests that may wait behind the running ones; past it the reply is RESOURCE_EXHAUSTED.",
    )
    generation_concurrency: int = setting(
        "STRATA_INFERENCE_GENERATION_CONCURRENCY",
        8,
        minimum=1,
        maximum=256,
        help="Generation requests sent upstream at once by the openai backend; the local model runs one at a time.",
    )
    default_max_tokens: int = setting(
        "STRATA_INFERENCE_DEFAULT_MAX_TOKENS",
        256,
        minimum=1,
        maximum=32_768,
        help="max_tokens used when a request leaves it 0.",
    )
    embedding_threads: int = setting(
        "STRATA_INFERENCE_EMBEDDING_THREADS",
        min(_CPUS, 2),
        minimum=1,
        maximum=256,
        help="onnxruntime intra-op threads for the local embedding model.",
    )
    generation_threads: int = setting(
        "STRATA_INFERENCE_GENERATION_THREADS",
        1,
        minimum=1,
        maximum=256,
        help="llama.cpp threads for the local generation model. llama.cpp threads spin-wait on each other, "
        "so more than one collapses (measured 40x) when other processes share the cores.",
    )
    context_tokens: int = setting(
        "STRATA_INFERENCE_CONTEXT_TOKENS",
        2048,
        minimum=256,
        maximum=8192,
        help="Context window of the local generation model (prompt plus answer), in tokens.",
    )
    openai_base_url: str = setting(
        "STRATA_INFERENCE_OPENAI_BASE_URL",
        "http://127.0.0.1:8000/v1",
        help="Base URL of the OpenAI-compatible server, up to and including /v1.",
    )
    openai_api_key: str = setting(
        "STRATA_INFERENCE_OPENAI_API_KEY",
        "",
        secret=True,
        help="Bearer token sent to the OpenAI-compatible server; empty sends none.",
    )
    openai_embedding_model: str = setting(
        "STRATA_INFERENCE_OPENAI_EMBEDDING_MODEL",
        "",
        help="Upstream name of the embedding model; empty means the same as STRATA_INFERENCE_EMBEDDING_MODEL.",
    )
    openai_generation_model: str = setting(
        "STRATA_INFERENCE_OPENAI_GENERATION_MODEL",
        "",
        help="Upstream name of the chat model; empty means the same as STRATA_INFERENCE_GENERATION_MODEL.",
    )
    openai_embedding_dimensions: int = setting(
        "STRATA_INFERENCE_OPENAI_EMBEDDING_DIMENSIONS",
        384,
        minimum=1,
        maximum=65_536,
        help="Vector size of the upstream embedding model, reported by ListModels.",
    )
    openai_max_input_tokens: int = setting(
        "STRATA_INFERENCE_OPENAI_MAX_INPUT_TOKENS",
        8192,
        minimum=1,
        maximum=10_000_000,
        help="Input limit of the upstream models, in tokens, reported by ListModels and Tokenize.",
    )
    openai_timeout_seconds: float = setting(
        "STRATA_INFERENCE_OPENAI_TIMEOUT_SECONDS",
        60.0,
        minimum=0.1,
        maximum=3600,
        help="Per-request timeout for the upstream server (connect, read, write).",
    )
    openai_max_retries: int = setting(
        "STRATA_INFERENCE_OPENAI_MAX_RETRIES",
        3,
        minimum=0,
        maximum=20,
        help="Retries on 429, 5xx and connection errors, with exponential backoff and jitter.",
    )
    openai_backoff_seconds: float = setting(
        "STRATA_INFERENCE_OPENAI_BACKOFF_SECONDS",
        0.5,
        minimum=0,
        maximum=60,
        help="First retry delay; doubles per retry, with full jitter. A Retry-After header wins.",
    )
    openai_max_backoff_seconds: float = setting(
        "STRATA_INFERENCE_OPENAI_MAX_BACKOFF_SECONDS",
        20.0,
        minimum=0,
        maximum=600,
        help="Longest single wait between retries, also the cap on an honoured Retry-After.",
    )
