"""Any OpenAI-compatible HTTP server (vLLM, Ollama, llama.cpp server, LM Studio,
OpenAI, Workers AI's /ai/v1) behind the inference contract, over httpx.

- `/embeddings` for Embed (vectors are L2-normalised here, whatever the server does),
  `/chat/completions` with `stream: true` (Server-Sent Events) for generation.
- 429, 5xx and connection failures are retried with exponential backoff and full
  jitter; a `Retry-After` header (seconds or an HTTP date) sets the wait instead.
  A stream is only retried before its first byte: after that, a cut stream ends
  the call with UNAVAILABLE rather than repeating text the client already has.
- Upstream failures map to gRPC codes in `translated_errors` and `_status_error`.
- Token counts: the server reports totals; per-input counts and Tokenize are an
  estimate of one token per 4 UTF-8 bytes (the usual figure for BPE on English),
  since the upstream tokenizer is not available here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import math
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx

from services.inference.config import InferenceSettings
from services.inference.domain import (
    ChatMessage,
    Delta,
    Done,
    Embedding,
    FinishReason,
    GenerationEvent,
    ModelInfo,
    SamplingOptions,
    Task,
)
from services.runtime.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StrataError,
    Unauthenticated,
    Unavailable,
)

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
BYTES_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


@contextlib.contextmanager
def translated_errors(what: str) -> Iterator[None]:
    """httpx transport failures as domain errors, in one place."""
    try:
        yield
    except StrataError:
        raise
    except httpx.TimeoutException as exc:
        raise DeadlineExceeded(
            f"{what}: the upstream server did not answer in time ({type(exc).__name__})",
            reason="UPSTREAM_TIMEOUT",
        ) from exc
    except (httpx.TransportError, httpx.StreamError) as exc:
        raise Unavailable(
            f"{what}: the upstream server is unreachable or closed the connection ({type(exc).__name__}: {exc})",
            reason="UPSTREAM_UNAVAILABLE",
        ) from exc
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise Unavailable(
            f"{what}: the upstream server sent a reply that is not OpenAI-compatible ({exc!r})",
            reason="UPSTREAM_BAD_REPLY",
        ) from exc


def _upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        error = body.get("error", body) if isinstance(body, dict) else body
        if isinstance(error, dict):
            return str(error.get("message") or error)
        return str(error)
    except ValueError:
        return response.text[:500]


def _status_error(what: str, response: httpx.Response) -> StrataError:
    status = response.status_code
    detail = f"{what}: upstream answered HTTP {status}: {_upstream_message(response)}"
    meta = {"http_status": str(status)}
    if status == 401:
        return Unauthenticated(detail, reason="UPSTREAM_UNAUTHENTICATED", metadata=meta)
    if status == 403:
        return PermissionDenied(detail, reason="UPSTREAM_PERMISSION_DENIED", metadata=meta)
    if status == 404:
        return NotFound(detail, reason="UPSTREAM_NOT_FOUND", metadata=meta)
    if status == 429:
        return ResourceExhausted(detail, reason="UPSTREAM_RATE_LIMITED", metadata=meta)
    if status in (408, 504):
        return DeadlineExceeded(detail, reason="UPSTREAM_TIMEOUT", metadata=meta)
    if status >= 500:
        return Unavailable(detail, reason="UPSTREAM_UNAVAILABLE", metadata=meta)
    return InvalidArgument(detail, reason="UPSTREAM_REJECTED_INPUT", metadata=meta)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The server's Retry-After, in seconds from now, or None when absent or unreadable."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    name = "openai"
    embed_concurrency = 4
    generation_concurrency = 256

    def __init__(self, settings: InferenceSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._upstream = {
            settings.embedding_model: settings.openai_embedding_model or settings.embedding_model,
            settings.generation_model: settings.openai_generation_model or settings.generation_model,
        }

    def models(self) -> Sequence[ModelInfo]:
        s = self.settings
        return (
            ModelInfo(
                name=s.embedding_model,
                task=Task.EMBEDDING,
                dimensions=s.openai_embedding_dimensions,
                max_input_tokens=s.openai_max_input_tokens,
                backend=self.name,
                description=f"Upstream embedding model {self._upstream[s.embedding_model]!r} at {s.openai_base_url}; "
                "token counts are estimates (4 bytes per token).",
            ),
            ModelInfo(
                name=s.generation_model,
                task=Task.GENERATION,
                dimensions=0,
                max_input_tokens=s.openai_max_input_tokens,
                backend=self.name,
                description=f"Upstream chat model {self._upstream[s.generation_model]!r} at {s.openai_base_url}.",
            ),
        )

    async def open(self) -> None:
        headers = {"Accept": "application/json"}
        if self.settings.openai_api_key:
            headers["Authorization"] = f"Bearer {self.settings.openai_api_key}"
        self._client = httpx.AsyncClient(
            base_url=self.settings.openai_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(self.settings.openai_timeout_seconds),
            transport=self._transport,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def probe(self) -> bool:
        if self._client is None:
            return False
        try:
            response = await self._client.get("models", timeout=min(5.0, self.settings.openai_timeout_seconds))
        except httpx.HTTPError:
            return False
        # Not every OpenAI-compatible server lists models (404 still proves it answers);
        # a rejected key or a failing server means calls would fail too.
        return response.status_code < 500 and response.status_code not in (401, 403)

    def _require_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise Unavailable("the OpenAI backend is not open", reason="BACKEND_NOT_OPEN")
        return self._client

    async def _backoff(self, attempt: int, response: httpx.Response | None) -> None:
        cap = self.settings.openai_max_backoff_seconds
        hinted = retry_after_seconds(response) if response is not None else None
        if hinted is not None:
            delay = min(cap, hinted)
        else:
            delay = random.uniform(0, min(cap, self.settings.openai_backoff_seconds * (2**attempt)))
        await asyncio.sleep(delay)

    async def _send(self, what: str, path: str, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST with retries; returns a 2xx response (for `stream`, still open: the caller closes it)."""
        client = self._require_client()
        attempts = self.settings.openai_max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                with translated_errors(what):
                    response = await client.send(client.build_request("POST", path, json=body), stream=stream)
            except Unavailable:
                # Connection refused or reset: worth another try; timeouts are not (they already took long).
                if last:
                    raise
                await self._backoff(attempt, None)
                continue
            if response.status_code < 400:
                return response
            with translated_errors(what):
                await response.aread()
            await response.aclose()
            if response.status_code in RETRYABLE_STATUS and not last:
                await self._backoff(attempt, response)
                continue
            raise _status_error(what, response)
        raise AssertionError("unreachable")

    def _fit(self, text: str) -> tuple[str, bool]:
        """Cut a text the estimate says is over the limit, so the upstream neither rejects nor
        silently truncates it; leaves room for two special tokens."""
        limit = (self.settings.openai_max_input_tokens - 2) * BYTES_PER_TOKEN
        encoded = text.encode("utf-8")
        if len(encoded) <= limit:
            return text, False
        return encoded[:limit].decode("utf-8", errors="ignore"), True

    async def embed(self, model: str, texts: Sequence[str]) -> list[Embedding]:
        fitted = [self._fit(text) for text in texts]
        body = {"model": self._upstream[model], "input": [t for t, _ in fitted], "encoding_format": "float"}
        response = await self._send("embedding", "embeddings", body, stream=False)
        with translated_errors("embedding"):
            data = sorted(response.json()["data"], key=lambda item: int(item["index"]))
            if len(data) != len(texts):
                raise ValueError(f"{len(data)} embeddings for {len(texts)} inputs")
            result = []
            for (text, cut), item in zip(fitted, data, strict=True):
                values = [float(v) for v in item["embedding"]]
                norm = math.sqrt(sum(v * v for v in values)) or 1.0
                result.append(Embedding([v / norm for v in values], estimate_tokens(text) + 2, truncated=cut))
            return result

    async def count_tokens(self, model: str, texts: Sequence[str]) -> list[int]:
        return [estimate_tokens(text) for text in texts]

    async def generate(
        self, model: str, messages: Sequence[ChatMessage], options: SamplingOptions
    ) -> AsyncIterator[GenerationEvent]:
        body: dict[str, Any] = {
            "model": self._upstream[model],
            "messages": [{"role": m.role.value if m.role else "user", "content": m.content} for m in messages],
            "max_tokens": options.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if options.temperature is not None:
            body["temperature"] = options.temperature
        if options.top_p is not None:
            body["top_p"] = options.top_p
        if options.stop:
            body["stop"] = list(options.stop)
        if options.seed is not None:
            body["seed"] = options.seed
        response = await self._send("generation", "chat/completions", body, stream=True)
        finish: FinishReason | None = None
        usage: dict[str, Any] = {}
        produced: list[str] = []
        finished = False
        try:
            with translated_errors("generation stream"):
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # SSE comments, event names, keep-alives
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        finished = True
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        raise Unavailable(
                            f"generation stream: upstream reported an error: {chunk['error']}",
                            reason="UPSTREAM_STREAM_ERROR",
                        )
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            produced.append(text)
                            yield Delta(text)
                        reason = choice.get("finish_reason")
                        if reason:
                            finish = FinishReason.LENGTH if reason == "length" else FinishReason.STOP
        finally:
            await response.aclose()
        if not finished and finish is None:
            raise Unavailable(
                "generation stream: the upstream server closed the stream before it finished",
                reason="UPSTREAM_STREAM_CUT",
            )
        prompt_estimate = sum(estimate_tokens(m.content) for m in messages)
        yield Done(
            finish_reason=finish or FinishReason.STOP,
            input_tokens=int(usage.get("prompt_tokens", prompt_estimate)),
            output_tokens=int(usage.get("completion_tokens", estimate_tokens("".join(produced)))),
        )
