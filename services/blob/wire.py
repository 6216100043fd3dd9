"""Registers the servicer so that undecodable requests are INVALID_ARGUMENT, not UNKNOWN.

grpcio fails a call whose bytes do not parse (e.g. a string field with invalid
UTF-8) with UNKNOWN before any servicer code runs. Here the deserializers hand such
bytes on as `_Undecodable`, and the handler raises InvalidArgument, which the
runtime's interceptor maps like any other domain error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from services.runtime.errors import InvalidArgument
from strata.blob.v1 import blob_pb2


class _Undecodable:
    def __init__(self, error: str) -> None:
        self.error = error


def _lenient(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return _Undecodable(str(exc))

    return deserialize


def _decoded(message: Any) -> Any:
    if isinstance(message, _Undecodable):
        raise InvalidArgument(f"the request could not be decoded: {message.error}", reason="MALFORMED_REQUEST")
    return message


async def _decoded_stream(messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for message in messages:
        yield _decoded(message)


def _handler(method: Any, behavior: Callable[..., Any]) -> grpc.RpcMethodHandler:
    request_type = getattr(blob_pb2, method.input_type.name)
    response_type = getattr(blob_pb2, method.output_type.name)
    kwargs = {
        "request_deserializer": _lenient(request_type.FromString),
        "response_serializer": response_type.SerializeToString,
    }
    if method.client_streaming:

        async def stream_in(requests: AsyncIterator[Any], context: Any) -> Any:
            return await behavior(_decoded_stream(requests), context)

        return grpc.stream_unary_rpc_method_handler(stream_in, **kwargs)
    if method.server_streaming:

        async def stream_out(request: Any, context: Any) -> AsyncIterator[Any]:
            async for response in behavior(_decoded(request), context):
                yield response

        return grpc.unary_stream_rpc_method_handler(stream_out, **kwargs)

    async def unary(request: Any, context: Any) -> Any:
        return await behavior(_decoded(request), context)

    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)


def add_servicer(servicer: Any, server: grpc.aio.Server) -> None:
    """Like the generated add_BlobServiceServicer_to_server, with lenient request decoding."""
    service = blob_pb2.DESCRIPTOR.services_by_name["BlobService"]
    handlers = {method.name: _handler(method, getattr(servicer, method.name)) for method in service.methods}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
