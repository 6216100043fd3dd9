"""Small builders and assertions shared by the vector contract tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf import json_format, struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strata.vector.v1 import vector_pb2


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(data)
    return out


def vec(vid: str, values: Sequence[float], metadata: dict[str, Any] | None = None, namespace: str = "") -> Any:
    v = vector_pb2.Vector(id=vid, values=list(values), namespace=namespace)
    if metadata is not None:
        v.metadata.CopyFrom(struct(metadata))
    return v


def list_keys(stub: Any, request: Any) -> list[tuple[str, str]]:
    """(namespace, id) of every vector a ListVectors request pages through, following its tokens."""
    seen: list[tuple[str, str]] = []
    while True:
        page = stub.ListVectors(request)
        seen += [(v.namespace, v.id) for v in page.vectors]
        if not page.next_page_token:
            return seen
        request.page_token = page.next_page_token


def as_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    return json_format.MessageToDict(message)


def rpc_error(call: Callable[[], Any], code: grpc.StatusCode, *words: str) -> grpc.RpcError:
    """Assert the call fails with `code`, a message holding `words`, and an ErrorInfo detail."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    message = error.details() or ""
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status"
    assert any(d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR) for d in status.details), "no ErrorInfo detail"
    return error


def reason(error: grpc.RpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""
