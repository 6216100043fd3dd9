"""One server interceptor for every Strata service: error mapping, readiness gate, access log.

- A `StrataError` raised by a servicer becomes its status code with the message and a
  `google.rpc.ErrorInfo` (reason, domain, metadata) in `grpc-status-details-bin`.
- An upstream gRPC error that escapes (a layer down) keeps UNAVAILABLE or
  DEADLINE_EXCEEDED; any other unexpected exception becomes INTERNAL with a generic
  message, and its traceback is logged, never sent.
- Until the backend is ready, calls other than health and reflection get UNAVAILABLE.
- Each call logs one line: method, code, duration_ms, peer; with `metrics`, it is also
  counted and timed by method and code (see services.runtime.metrics).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.runtime.errors import ERROR_DOMAIN, StrataError, Unavailable, Unimplemented
from services.runtime.metrics import MethodSeries, ServerMetrics, grpc_type

access_log = logging.getLogger("strata.access")
error_log = logging.getLogger("strata.errors")

# Chatty infrastructure methods are logged at debug level and never gated.
_INFRA_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def status_for(error: StrataError) -> grpc.Status:
    """The rich status for a domain error: code, message and an ErrorInfo detail."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=error.code.value[0], message=error.message, details=[detail])
    return rpc_status.to_status(status)


def as_strata_error(exc: BaseException, method: str) -> StrataError:
    if isinstance(exc, StrataError):
        return exc
    if isinstance(exc, NotImplementedError):
        # What the generated base servicer raises for an RPC this server does not implement.
        return Unimplemented(f"{method} is not implemented by this server", reason="UNIMPLEMENTED")
    if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    ):
        error = Unavailable(f"an upstream service did not answer: {exc.details()}", reason="UPSTREAM_UNAVAILABLE")
        error.code = exc.code()
        return error
    error_log.error("unexpected error in %s", method, exc_info=exc, extra={"method": method})
    return StrataError("internal error; the server log has the details", reason="INTERNAL")


class ServiceInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every handler; `is_ready` and `admit` gate non-infrastructure calls; `metrics` records every call.

    `admit(method, context)` runs before each such call and raises a StrataError to refuse it
    (e.g. a missing API key), so its refusals are mapped and logged like any other error.
    """

    def __init__(
        self,
        is_ready: Callable[[], bool] = lambda: True,
        metrics: ServerMetrics | None = None,
        admit: Admit | None = None,
    ) -> None:
        self._is_ready = is_ready
        self._metrics = metrics
        self._admit = admit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        infra = method.startswith(_INFRA_PREFIXES)
        gate = None if infra else _gate(self._is_ready, self._admit, method)
        level = logging.DEBUG if infra else logging.INFO
        track = _tracker(self._metrics, method, grpc_type(handler))
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(handler.unary_unary, method, gate, level, track), **kwargs
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(handler.stream_unary, method, gate, level, track), **kwargs
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(handler.unary_stream, method, gate, level, track), **kwargs
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(handler.stream_stream, method, gate, level, track), **kwargs
        )


# Decides whether a call (method "/pkg.Service/Method", its context) may run; raises to refuse.
Admit = Callable[[str, Any], None]
Gate = Callable[[Any], None]


def _gate(is_ready: Callable[[], bool], admit: Admit | None, method: str) -> Gate:
    def gate(context: Any) -> None:
        if not is_ready():
            raise Unavailable("the service is starting; retry shortly", reason="STARTING")
        if admit is not None:
            admit(method, context)

    return gate


def _tracker(metrics: ServerMetrics | None, method: str, kind: str) -> Callable[[], MethodSeries] | None:
    if metrics is None:
        return None
    return lambda: metrics.start_call(method, kind)


def _log(
    method: str, code: grpc.StatusCode, started: float, peer: str, level: int, call: MethodSeries | None = None
) -> None:
    elapsed = time.perf_counter() - started
    if call is not None:
        call.finish(code, elapsed)
    if access_log.isEnabledFor(level):
        access_log.log(
            level,
            "rpc",
            extra={
                "method": method,
                "code": code.name,
                "duration_ms": round(elapsed * 1000, 3),
                "peer": peer,
            },
        )


async def _abort(context: Any, status: grpc.Status) -> None:
    # What abort_with_status does, but through `abort`, which a tracing context wrapper sees.
    await context.abort(status.code, status.details, status.trailing_metadata)


def _aborted_code(context: Any) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN


def _wrap_unary(
    behavior: Callable[..., Any],
    method: str,
    gate: Gate | None,
    level: int,
    track: Callable[[], MethodSeries] | None = None,
) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        # Asked now: once a call is cancelled by a stopping server, its context may no longer
        # be safe to ask (grpcio has crashed the process on `peer()` then).
        peer = context.peer()
        call = track() if track is not None else None
        code = grpc.StatusCode.OK
        try:
            if gate is not None:
                gate(context)
            return await behavior(request, context)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
            error = as_strata_error(exc, method)
            code = error.code
            await _abort(context, status_for(error))
        finally:
            _log(method, code, started, peer, level, call)

    return wrapper


def _wrap_stream(
    behavior: Callable[..., Any],
    method: str,
    gate: Gate | None,
    level: int,
    track: Callable[[], MethodSeries] | None = None,
) -> Callable[..., Any]:
    async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        started = time.perf_counter()
        # Asked now: once a call is cancelled by a stopping server, its context may no longer
        # be safe to ask (grpcio has crashed the process on `peer()` then).
        peer = context.peer()
        call = track() if track is not None else None
        code = grpc.StatusCode.OK
        try:
            if gate is not None:
                gate(context)
            result = behavior(request, context)
            if inspect.isasyncgen(result):
                async for response in result:
                    yield response
            else:
                await result
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            code = _aborted_code(context)
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place errors are mapped
            error = as_strata_error(exc, method)
            code = error.code
            await _abort(context, status_for(error))
        finally:
            _log(method, code, started, peer, level, call)

    return wrapper
