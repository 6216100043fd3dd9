"""Clients of the four layer services, with deadlines, retries, bounded concurrency and error mapping.

Every call to a layer goes through `Upstream`:
- its deadline is the configured upstream timeout, shortened to what is left of the
  gateway client's own deadline (`client_deadline` is set per incoming call);
- idempotent methods are retried on UNAVAILABLE with exponential backoff by gRPC
  itself (service config), so a restarting layer is ridden out;
- at most `upstream_concurrency` calls are in flight per layer;
- a failure comes back as a domain error (`UpstreamError` carries the layer's
  code), so callers give it meaning (a missing index is a missing collection) and
  the rest maps to UNAVAILABLE / INVALID_ARGUMENT / ... in the interceptor.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime import errors, tracing
from strata.blob.v1 import blob_pb2_grpc
from strata.inference.v1 import inference_pb2_grpc
from strata.metadata.v1 import metadata_pb2_grpc
from strata.vector.v1 import vector_pb2_grpc

# Absolute (time.monotonic) deadline of the gateway call being served, if its client set one.
client_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("client_deadline", default=None)

# Methods safe to repeat after UNAVAILABLE: reads, and writes that are idempotent by design
# (upserts by id, deletes, puts whose result does not depend on how often they ran).
IDEMPOTENT = {
    "strata.inference.v1.InferenceService": ["ListModels", "Embed", "Tokenize", "Rerank"],
    "strata.vector.v1.VectorService": [
        "GetIndex",
        "ListIndexes",
        "Query",
        "GetVectors",
        "ListVectors",
        "UpsertVectors",
        "DeleteVectors",
    ],
    "strata.metadata.v1.MetadataService": ["ListDatabases"],
    "strata.blob.v1.BlobService": ["ListBuckets", "HeadObject", "ListObjects", "DeleteObject", "GetObject"],
}

_CODE_TO_ERROR: dict[grpc.StatusCode, type[errors.StrataError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: errors.OutOfRange,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.DeadlineExceeded,
    grpc.StatusCode.PERMISSION_DENIED: errors.Unavailable,
    grpc.StatusCode.UNAUTHENTICATED: errors.Unavailable,
    grpc.StatusCode.CANCELLED: errors.Unavailable,
}


class UpstreamError(errors.StrataError):
    """A layer's failure, keeping the layer's own status code for callers that give it meaning."""

    def __init__(self, layer: str, exc: grpc.aio.AioRpcError) -> None:
        self.layer = layer
        self.upstream_code = exc.code()
        kind = _CODE_TO_ERROR.get(exc.code(), errors.Unavailable)
        detail = exc.details() or exc.code().name
        if kind is errors.Unavailable:
            message = f"the {layer} service failed ({exc.code().name}): {detail}"
        else:
            message = detail
        super().__init__(message, reason=f"UPSTREAM_{exc.code().name}", metadata={"layer": layer})
        self.code = kind.code


def _service_config(service: str) -> str:
    methods = [{"service": service, "method": m} for m in IDEMPOTENT.get(service, [])]
    config: dict[str, Any] = {"methodConfig": []}
    if methods:
        config["methodConfig"].append(
            {
                "name": methods,
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        )
    return json.dumps(config)


class Upstream:
    """One layer: a channel, its stub, a concurrency bound and a default timeout."""

    def __init__(
        self,
        layer: str,
        address: str,
        service: str,
        stub_cls: Any,
        timeout: float,
        concurrency: int,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        self.layer = layer
        self.address = address
        self.service = service
        self.timeout = timeout
        options = [
            ("grpc.service_config", _service_config(service)),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            # Layers are near: reconnect quickly after a restart instead of backing off for minutes.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(
                address, options=options, interceptors=tracing.client_interceptors()
            )
        else:
            self.channel = grpc.aio.secure_channel(
                address, credentials, options=options, interceptors=tracing.client_interceptors()
            )
        self.stub = stub_cls(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self._slots = asyncio.Semaphore(concurrency)
        self.in_flight = 0

    def deadline(self, timeout: float | None = None) -> float:
        """Seconds this call may take: the configured timeout, cut to the client's remaining deadline."""
        budget = timeout if timeout is not None else self.timeout
        outer = client_deadline.get()
        if outer is not None:
            budget = min(budget, outer - time.monotonic())
        if budget <= 0:
            raise errors.DeadlineExceeded("the request's deadline passed before the gateway could finish it")
        return budget

    async def call(self, method: str, request: Any, *, timeout: float | None = None) -> Any:
        """A unary (or client-streaming, given an async iterator) call, mapped to domain errors."""
        rpc = getattr(self.stub, method)
        async with self._slots:
            self.in_flight += 1
            try:
                return await rpc(request, timeout=self.deadline(timeout))
            except grpc.aio.AioRpcError as exc:
                raise UpstreamError(self.layer, exc) from exc
            finally:
                self.in_flight -= 1

    async def stream(self, method: str, request: Any, *, timeout: float | None = None) -> AsyncIterator[Any]:
        """A server-streaming call; cancelling the consumer cancels the upstream call."""
        rpc = getattr(self.stub, method)
        async with self._slots:
            self.in_flight += 1
            call = rpc(request, timeout=self.deadline(timeout))
            try:
                async for response in call:
                    yield response
            except grpc.aio.AioRpcError as exc:
                raise UpstreamError(self.layer, exc) from exc
            finally:
                call.cancel()
                self.in_flight -= 1

    async def serving(self) -> bool:
        try:
            reply = await self.health.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=2)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    async def close(self) -> None:
        await self.channel.close()


class Upstreams:
    """The four layers the gateway composes."""

    def __init__(
        self,
        *,
        inference: str,
        vector: str,
        metadata: str,
        blob: str,
        timeout: float,
        concurrency: int,
        credentials: grpc.ChannelCredentials | None = None,
    ):
        def upstream(layer: str, address: str, service: str, stub: Any) -> Upstream:
            return Upstream(layer, address, service, stub, timeout, concurrency, credentials)

        self.inference = upstream(
            "inference", inference, "strata.inference.v1.InferenceService", inference_pb2_grpc.InferenceServiceStub
        )
        self.vector = upstream("vector", vector, "strata.vector.v1.VectorService", vector_pb2_grpc.VectorServiceStub)
        self.metadata = upstream(
            "metadata", metadata, "strata.metadata.v1.MetadataService", metadata_pb2_grpc.MetadataServiceStub
        )
        self.blob = upstream("blob", blob, "strata.blob.v1.BlobService", blob_pb2_grpc.BlobServiceStub)

    def all(self) -> Iterable[Upstream]:
        return (self.inference, self.vector, self.metadata, self.blob)

    async def status(self) -> dict[str, bool]:
        """Which layers report SERVING right now."""
        results = await asyncio.gather(*(u.serving() for u in self.all()))
        return {u.layer: ok for u, ok in zip(self.all(), results, strict=True)}

    async def close(self) -> None:
        await asyncio.gather(*(u.close() for u in self.all()))
