"""Running SQL on the metadata service: Python values in, rows of Python values out."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import grpc
from google.protobuf import struct_pb2

from gateway.upstreams import Upstream, UpstreamError
from strata.metadata.v1 import metadata_pb2

SqlValue = None | int | float | str | bytes
Statement = tuple[str, Sequence[SqlValue]]


def to_value(value: SqlValue) -> metadata_pb2.Value:
    if value is None:
        return metadata_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, bool):
        return metadata_pb2.Value(int_value=int(value))
    if isinstance(value, int):
        return metadata_pb2.Value(int_value=value)
    if isinstance(value, float):
        return metadata_pb2.Value(double_value=value)
    if isinstance(value, str):
        return metadata_pb2.Value(text_value=value)
    if isinstance(value, bytes):
        return metadata_pb2.Value(bytes_value=value)
    raise TypeError(f"unsupported SQL value {type(value).__name__}")


def from_value(value: metadata_pb2.Value) -> SqlValue:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    result: SqlValue = getattr(value, kind)
    return result


def _rows(result: metadata_pb2.Result) -> list[dict[str, Any]]:
    columns = list(result.columns)
    return [dict(zip(columns, (from_value(v) for v in row.values), strict=True)) for row in result.rows]


class Sql:
    """One metadata database, as the gateway uses it."""

    def __init__(self, upstream: Upstream, database: str) -> None:
        self.upstream = upstream
        self.database = database

    async def query(
        self, sql: str, params: Sequence[SqlValue] = (), *, read_only: bool = False
    ) -> list[dict[str, Any]]:
        request = metadata_pb2.QueryRequest(
            database=self.database, sql=sql, params=[to_value(p) for p in params], read_only=read_only
        )
        # Reads are safe to repeat; gRPC's own retries cover only methods that are always idempotent.
        attempts = 4 if read_only else 1
        for attempt in range(attempts):
            try:
                response = await self.upstream.call("Query", request)
                return _rows(response.result)
            except UpstreamError as exc:
                if exc.upstream_code != grpc.StatusCode.UNAVAILABLE or attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.1 * 3**attempt)
        raise AssertionError("unreachable")

    async def batch(self, statements: Sequence[Statement]) -> list[list[dict[str, Any]]]:
        """Run statements as one transaction: all or nothing."""
        request = metadata_pb2.BatchRequest(
            database=self.database,
            statements=[metadata_pb2.Statement(sql=s, params=[to_value(p) for p in ps]) for s, ps in statements],
        )
        response = await self.upstream.call("Batch", request)
        return [_rows(r) for r in response.results]
