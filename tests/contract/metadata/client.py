"""Small helpers the contract tests share: values, queries and rich-error details."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strata.metadata.v1 import metadata_pb2 as pb
from strata.metadata.v1 import metadata_pb2_grpc

Stub = metadata_pb2_grpc.MetadataServiceStub


def v(value: Any) -> pb.Value:
    """A typed Value from a Python value."""
    if value is None:
        return pb.Value(null_value=0)
    if isinstance(value, bool):
        raise TypeError("use ints for booleans")
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(double_value=value)
    if isinstance(value, str):
        return pb.Value(text_value=value)
    return pb.Value(bytes_value=bytes(value))


def py(value: pb.Value) -> Any:
    kind = value.WhichOneof("kind")
    return None if kind in (None, "null_value") else getattr(value, kind)


def rows(result: pb.Result) -> list[tuple[Any, ...]]:
    return [tuple(py(x) for x in row.values) for row in result.rows]


def query(stub: Stub, database: str, sql: str, *params: Any, **flags: bool) -> pb.Result:
    request = pb.QueryRequest(database=database, sql=sql, params=[v(p) for p in params], **flags)
    return stub.Query(request, timeout=30).result


def batch(stub: Stub, database: str, statements: Sequence[tuple[str, Sequence[Any]] | str]) -> list[pb.Result]:
    request = pb.BatchRequest(database=database)
    for item in statements:
        sql, params = (item, ()) if isinstance(item, str) else item
        request.statements.add(sql=sql, params=[v(p) for p in params])
    return list(stub.Batch(request, timeout=60).results)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"no rich status on {error}"
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    raise AssertionError(f"no ErrorInfo on {error}")


def expect_error(code: grpc.StatusCode, call: Any, *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    assert caught.value.code() == code, f"{caught.value.code()} {caught.value.details()}"
    return caught.value
