"""Protobuf <-> core values for strata.metadata.v1."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import duration_pb2, struct_pb2

from services.metadata.model import DatabaseInfo, SqlValue, Statement, StatementResult
from strata.metadata.v1 import metadata_pb2 as pb

_NULL = pb.Value(null_value=struct_pb2.NULL_VALUE)


def value_from_proto(value: pb.Value) -> SqlValue:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    result: SqlValue = getattr(value, kind)
    return result


def value_to_proto(value: SqlValue) -> pb.Value:
    if value is None:
        return _NULL
    if isinstance(value, int):
        return pb.Value(int_value=value)
    if isinstance(value, float):
        return pb.Value(double_value=value)
    if isinstance(value, str):
        return pb.Value(text_value=value)
    return pb.Value(bytes_value=bytes(value))


def statement_from_proto(sql: str, params: Sequence[pb.Value]) -> Statement:
    # Inlined value_from_proto: this runs once per parameter of every batched statement.
    return Statement(
        sql,
        tuple([None if (k := p.WhichOneof("kind")) is None or k == "null_value" else getattr(p, k) for p in params]),
    )


def result_to_proto(result: StatementResult, *, as_records: bool) -> pb.Result:
    seconds = result.duration_seconds
    meta = pb.Meta(
        changes=result.changes,
        last_row_id=result.last_row_id,
        rows_read=result.rows_read,
        rows_written=result.rows_written,
        duration=duration_pb2.Duration(seconds=int(seconds), nanos=int(seconds % 1 * 1e9)),
    )
    columns = result.columns
    if not columns:
        return pb.Result(meta=meta)
    if as_records:
        records = [
            pb.Record(fields={c: value_to_proto(v) for c, v in zip(columns, row, strict=True)}) for row in result.rows
        ]
        return pb.Result(columns=columns, records=records, meta=meta)
    rows = [pb.Row(values=[value_to_proto(v) for v in row]) for row in result.rows]
    return pb.Result(columns=columns, rows=rows, meta=meta)


def database_to_proto(info: DatabaseInfo) -> pb.Database:
    database = pb.Database(name=info.name, size_bytes=info.size_bytes)
    if info.created_at is not None:
        database.create_time.FromDatetime(info.created_at)
    return database
