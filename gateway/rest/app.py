"""The REST adapter: one Starlette app whose routes come from the gateway contract's annotations.

Each HTTP request is transcoded into the RPC's request message and handed to the
same servicer the gRPC server uses (in-process, no second hop); domain errors map
to HTTP codes with a JSON error body. A server-streaming RPC that shares its
method and path with a unary one (AskStream and Ask) is chosen when the client
sends `Accept: text/event-stream`, and is served as Server-Sent Events; a client
that disconnects cancels the stream, which cancels generation upstream.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import symbol_database
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route as StarletteRoute

from gateway.rest.errors import HTTP_STATUS, error_body
from gateway.rest.openapi import docs_page, openapi_document
from gateway.rest.routes import Route, routes_for
from gateway.rest.transcode import build_request, to_json
from services.runtime.errors import InvalidArgument, NotFound, ResourceExhausted, StrataError
from services.runtime.interceptor import as_strata_error

log = logging.getLogger("strata.rest")

# Checks a request's credentials and limits before it reaches the servicer: (request, method full name) -> None.
Guard = Callable[[Request, str], None]


class RestContext:
    """The little of grpc.aio.ServicerContext the servicer uses, for in-process REST calls."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def time_remaining(self) -> float | None:
        return None

    def peer(self) -> str:
        client = self._request.client
        return f"http:{client.host}:{client.port}" if client else "http:unknown"


def error_response(error: StrataError) -> JSONResponse:
    headers = {}
    if "retry_after_seconds" in error.metadata:
        headers["Retry-After"] = error.metadata["retry_after_seconds"]
    status = HTTP_STATUS.get(error.code, 500)
    if error.reason == "BODY_TOO_LARGE":
        status = 413  # RESOURCE_EXHAUSTED, but HTTP has a precise code for it
    body = error_body(error)
    body["error"]["code"] = status  # type: ignore[index]
    return JSONResponse(body, status_code=status, headers=headers)


def _wants_events(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "")


def _sse(event: str, payload: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def create_rest_app(
    servicer: Any,
    service: Any,
    *,
    max_body_bytes: int,
    guard: Guard | None = None,
) -> Starlette:
    """The ASGI app for `service` (a ServiceDescriptor) backed by `servicer`."""
    routes = routes_for(service)
    database = symbol_database.Default()
    spec = openapi_document(service, routes)

    def choose(http_method: str, path: str, request: Request) -> tuple[Route, dict[str, str]]:
        candidates = [(r, params) for r in routes if (params := r.match(http_method, path)) is not None]
        if not candidates:
            known_path = any(r.pattern.fullmatch(path) for r in routes)
            if known_path:
                raise StrataError(f"{http_method} is not allowed on {path}", reason="METHOD_NOT_ALLOWED")
            raise NotFound(f"no route for {http_method} {path}", reason="NO_ROUTE")
        streaming = _wants_events(request)
        for route, params in candidates:
            if route.server_streaming == streaming:
                return route, params
        return candidates[0]

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body_bytes:
            raise ResourceExhausted(
                f"request body is {declared} bytes; the limit is {max_body_bytes}", reason="BODY_TOO_LARGE"
            )
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > max_body_bytes:
                raise ResourceExhausted(
                    f"request body is over the {max_body_bytes}-byte limit", reason="BODY_TOO_LARGE"
                )
        return bytes(body)

    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        status = 200
        method_name = "-"
        try:
            try:
                route, params = choose(request.method, request.url.path, request)
            except StrataError as exc:
                if exc.reason == "METHOD_NOT_ALLOWED":
                    status = 405
                    payload = error_body(InvalidArgument(exc.message, reason=exc.reason))
                    payload["error"]["code"] = 405  # type: ignore[index]
                    return JSONResponse(payload, status_code=405)
                raise
            method_name = route.method.full_name
            if guard is not None:
                guard(request, method_name)
            body = await read_body(request)
            if not route.body and body.strip():
                raise InvalidArgument(f"{request.method} {route.template} takes no body", reason="UNEXPECTED_BODY")
            message_cls = database.GetSymbol(route.method.input_type.full_name)
            rpc_request = build_request(message_cls, params, list(request.query_params.multi_items()), body, route.body)
            handler = getattr(servicer, route.method.name)
            context = RestContext(request)
            if route.server_streaming:
                return await _stream(handler(rpc_request, context))
            reply: Message = await handler(rpc_request, context)
            return JSONResponse(to_json(reply))
        except Exception as exc:  # noqa: BLE001 - mapped like the gRPC interceptor maps it
            error = as_strata_error(exc, method_name)
            response = error_response(error)
            status = response.status_code
            return response
        finally:
            log.info(
                "http",
                extra={
                    "method": method_name,
                    "http": f"{request.method} {request.url.path}",
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )

    async def _stream(events: AsyncIterator[Message]) -> Response:
        # The first event is awaited before answering, so errors found early get a real HTTP status.
        iterator = events.__aiter__()
        try:
            first = await iterator.__anext__()
        except StopAsyncIteration:
            first = None

        async def body() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield _sse(first.WhichOneof("event") or "message", to_json(first))
                async for event in iterator:
                    yield _sse(event.WhichOneof("event") or "message", to_json(event))
            except Exception as exc:  # noqa: BLE001 - reported in-band: the status line is already sent
                yield _sse("error", error_body(as_strata_error(exc, "stream")))
            finally:
                await iterator.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def openapi(_request: Request) -> Response:
        return JSONResponse(spec)

    async def docs(_request: Request) -> Response:
        return HTMLResponse(docs_page(spec))

    async def http_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 404/405 (paths the catch-all route cannot match) in the same JSON shape.
        status = getattr(exc, "status_code", 500)
        code = {404: NotFound, 405: InvalidArgument}.get(status, InvalidArgument)
        error = code(f"no route for {request.method} {request.url.path}", reason="NO_ROUTE")
        payload = error_body(error)
        payload["error"]["code"] = status  # type: ignore[index]
        return JSONResponse(payload, status_code=status)

    app = Starlette(
        exception_handlers={404: http_error, 405: http_error},
        routes=[
            StarletteRoute("/openapi.json", openapi, methods=["GET"]),
            StarletteRoute("/docs", docs, methods=["GET"]),
            StarletteRoute("/{path:path}", handle, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
        ],
    )
    return app
