"""A real OpenAI-compatible HTTP server on loopback, for testing the openai backend.

It answers `/v1/models`, `/v1/embeddings` and `/v1/chat/completions` (plain and
SSE streaming) with the same packaged models the local backend runs, so the
contract suite gives comparable results through both backends. Tests steer it
through `FakeOpenAI.script`: queued HTTP failures (a 429 storm, 5xx), an API key
to require, a stream to cut after N chunks, a delay to provoke timeouts. Every
request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from services.inference.domain import ChatMessage, Delta, Done, Role, SamplingOptions
from services.inference.minilm import MiniLMEmbedder
from services.inference.smollm import SmolLMGenerator
from tests.support.servers import free_port


@dataclass
class Script:
    """What the server does next; tests change it between calls."""

    # Responses to send instead of the real answer, one per POST request, in order: (status, headers, body).
    failures: list[tuple[int, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    # Bearer token required on every request; None accepts anything.
    api_key: str | None = None
    # Answer every request, /v1/models included, with 503.
    down: bool = False
    # A key that is valid but not allowed (403).
    forbidden_key: str | None = None
    # Cut the next chat stream's connection after this many content chunks.
    cut_stream_after: int | None = None
    # Seconds to wait before answering.
    delay: float = 0.0
    # Expected upstream model names (others get 404).
    embedding_model: str = "text-embedding-fake"
    chat_model: str = "chat-fake"


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


class FakeOpenAI:
    def __init__(self) -> None:
        self.script = Script()
        self.requests: list[Recorded] = []
        self._embedder = MiniLMEmbedder(threads=1)
        self._generator = SmolLMGenerator(threads=1, context_tokens=2048)
        self._model_lock = threading.Lock()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(
            routes=[
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def reset(self) -> None:
        self.script = Script()
        self.requests.clear()

    def count(self, path_suffix: str) -> int:
        return sum(1 for r in self.requests if r.path.endswith(path_suffix))

    # -- shared request handling ----------------------------------------------------------------

    async def _gate(self, request: Request) -> tuple[Any, Response | None]:
        body: Any = None
        if request.method == "POST":
            try:
                body = await request.json()
            except json.JSONDecodeError:
                return None, JSONResponse({"error": {"message": "body is not JSON"}}, status_code=400)
        self.requests.append(Recorded(request.url.path, dict(request.headers), body, time.monotonic()))
        script = self.script
        if script.delay:
            await asyncio.sleep(script.delay)
        token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if script.api_key is not None and token != script.api_key:
            if script.forbidden_key is not None and token == script.forbidden_key:
                return body, JSONResponse({"error": {"message": "key not allowed"}}, status_code=403)
            return body, JSONResponse({"error": {"message": "invalid api key"}}, status_code=401)
        if script.down:
            return body, JSONResponse({"error": {"message": "down"}}, status_code=503)
        if script.failures and request.method == "POST":
            status, headers, payload = script.failures.pop(0)
            return body, JSONResponse(payload, status_code=status, headers=headers)
        return body, None

    async def _models(self, request: Request) -> Response:
        _, failure = await self._gate(request)
        if failure:
            return failure
        names = [self.script.embedding_model, self.script.chat_model]
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model"} for n in names]})

    async def _embeddings(self, request: Request) -> Response:
        body, failure = await self._gate(request)
        if failure:
            return failure
        if body.get("model") != self.script.embedding_model:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, status_code=404)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        vectors = await asyncio.to_thread(self._embedder.embed, inputs)
        # Scaled on purpose: some servers do not normalise, and the backend must.
        data = [
            {"object": "embedding", "index": i, "embedding": [2.0 * v for v in e.values]} for i, e in enumerate(vectors)
        ]
        usage = {"prompt_tokens": sum(e.token_count for e in vectors), "total_tokens": 0}
        return JSONResponse({"object": "list", "data": data, "model": body["model"], "usage": usage})

    async def _events(self, body: dict[str, Any]) -> AsyncIterator[Delta | Done]:
        """Run the model on a thread; stop it when the consumer goes away (client disconnected)."""
        roles = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
        messages = [ChatMessage(roles[m["role"]], m["content"]) for m in body["messages"]]
        options = SamplingOptions(
            max_tokens=int(body.get("max_tokens") or 64),
            temperature=body.get("temperature"),
            top_p=body.get("top_p"),
            stop=tuple(body.get("stop") or ()),
            seed=body.get("seed"),
        )
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, item)

        def work() -> None:
            try:
                with self._model_lock:
                    self._generator.generate(messages, options, emit, cancelled)
            except Exception as exc:  # noqa: BLE001 - re-raised in the request's task
                emit(exc)
            finally:
                emit(None)

        loop.run_in_executor(None, work)
        try:
            while (item := await events.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            cancelled.set()

    async def _chat(self, request: Request) -> Response:
        body, failure = await self._gate(request)
        if failure:
            return failure
        if body.get("model") != self.script.chat_model:
            return JSONResponse({"error": {"message": f"model {body.get('model')!r} not found"}}, status_code=404)
        if not body.get("stream"):
            pieces: list[str] = []
            done: Done | None = None
            async for event in self._events(body):
                if isinstance(event, Delta):
                    pieces.append(event.text)
                else:
                    done = event
            assert done is not None
            usage = {"prompt_tokens": done.input_tokens, "completion_tokens": done.output_tokens}
            message = {"role": "assistant", "content": "".join(pieces)}
            choice = {"index": 0, "message": message, "finish_reason": done.finish_reason.value}
            return JSONResponse({"object": "chat.completion", "choices": [choice], "usage": usage})
        cut_after = self.script.cut_stream_after
        self.script.cut_stream_after = None

        async def sse() -> AsyncIterator[str]:
            sent = 0
            async for event in self._events(body):
                if isinstance(event, Delta):
                    if cut_after is not None and sent >= cut_after:
                        # An exception mid-body makes uvicorn drop the connection without ending the chunked body.
                        raise ConnectionAbortedError("stream cut by the test script")
                    chunk = {
                        "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": event.text}}],
                    }
                    sent += 1
                    yield f"data: {json.dumps(chunk)}\n\n"
                    continue
                usage = {"prompt_tokens": event.input_tokens, "completion_tokens": event.output_tokens}
                final = {"index": 0, "delta": {}, "finish_reason": event.finish_reason.value}
                yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [final]})}\n\n"
                if (body.get("stream_options") or {}).get("include_usage"):
                    yield f"data: {json.dumps({'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(sse(), media_type="text/event-stream")
