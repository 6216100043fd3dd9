"""Protobuf <-> core values for strata.metadata.v1.

Results are written into the response in place (add() then set fields): building
a message and copying it into a repeated field costs several times more, and a
1,000-statement Batch builds 1,000 results.
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import struct_pb2

from services.metadata.model import DatabaseInfo, SqlValue, Statement, StatementResult
from strata.metadata.v1 import metadata_pb2 as pb

_NULL = struct_pb2.NULL_VALUE


def value_from_proto(value: pb.Value) -> SqlValue:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    result: SqlValue = getattr(value, kind)
    return result


def set_value(target: pb.Value, value: SqlValue) -> None:
    if value is None:
        target.null_value = _NULL
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.text_value = value
    else:
        target.bytes_value = bytes(value)


def value_to_proto(value: SqlValue) -> pb.Value:
    message = pb.Value()
    set_value(message, value)
    return message


def statement_from_proto(message: pb.Statement | pb.QueryRequest) -> Statement:
    # Inlined value_from_proto: this runs once per parameter of every batched statement.
    return Statement(
        message.sql,
        tuple(
            [
                None if (k := p.WhichOneof("kind")) is None or k == "null_value" else getattr(p, k)
                for p in message.params
            ]
        ),
    )


def fill_result(target: pb.Result, result: StatementResult, *, as_records: bool) -> None:
    meta = target.meta
    meta.changes = result.changes
    meta.last_row_id = result.last_row_id
    meta.rows_read = result.rows_read
    meta.rows_written = result.rows_written
    seconds = result.duration_seconds
    meta.duration.seconds = int(seconds)
    meta.duration.nanos = int(seconds % 1 * 1e9)
    columns = result.columns
    if not columns:
        return
    target.columns.extend(columns)
    if as_records:
        add_record = target.records.add
        for row in result.rows:
            fields = add_record().fields
            for column, value in zip(columns, row, strict=True):
                set_value(fields[column], value)
    else:
        add_row = target.rows.add
        for row in result.rows:
            add_value = add_row().values.add
            for value in row:
                set_value(add_value(), value)


def result_to_proto(result: StatementResult, *, as_records: bool) -> pb.Result:
    message = pb.Result()
    fill_result(message, result, as_records=as_records)
    return message


def batch_response(results: Iterable[StatementResult], *, as_records: bool) -> pb.BatchResponse:
    response = pb.BatchResponse()
    add = response.results.add
    for result in results:
        fill_result(add(), result, as_records=as_records)
    return response


def database_to_proto(info: DatabaseInfo) -> pb.Database:
    database = pb.Database(name=info.name, size_bytes=info.size_bytes)
    if info.created_at is not None:
        database.create_time.FromDatetime(info.created_at)
    return database
