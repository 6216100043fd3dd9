"""Protobuf <-> core values for strata.metadata.v1.

Results are written into the response in place (add() then set fields): building
a message and copying it into a repeated field costs several times more, and a
1,000-statement Batch builds 1,000 results.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from google.protobuf import struct_pb2

from services.metadata.model import (
    Columns,
    DatabaseInfo,
    SqlValue,
    Statement,
    StatementResult,
    mark_statement,
    nan_parameter,
)
from services.runtime.errors import InvalidArgument, StrataError
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


MAX_BULK_ROWS = 100_000


def batch_statement_from_proto(message: pb.Statement, index: int) -> Statement:
    """A Batch statement: with `params` as Query's, or a bulk statement from its `columns`."""
    if not message.HasField("columns"):
        return statement_from_proto(message)
    try:
        if message.params:
            raise InvalidArgument("set either params or columns, not both", reason="PARAMS_AND_COLUMNS")
        return Statement(message.sql, (), columns_from_proto(message.columns))
    except StrataError as error:
        raise mark_statement(error, index, in_batch=True) from None


def columns_from_proto(bulk: pb.ParamColumns) -> Columns:
    """Checked column-wise parameters; `list()` of a packed repeated field runs in C."""
    count = bulk.row_count
    if not 1 <= count <= MAX_BULK_ROWS:
        raise InvalidArgument(f"row_count is {count}; use 1..{MAX_BULK_ROWS}", reason="INVALID_ROW_COUNT")
    columns: list[Sequence[SqlValue]] = []
    for position, column in enumerate(bulk.columns):
        typed = [
            values
            for values in (column.int_values, column.double_values, column.text_values, column.bytes_values)
            if values
        ]
        if len(typed) > 1:
            raise InvalidArgument(f"column {position} sets more than one typed list", reason="INVALID_COLUMN")
        nulls = column.null_rows
        if column.double_values and any(map(math.isnan, column.double_values)):
            raise nan_parameter(f"column {position}")
        if typed:
            if len(typed[0]) != count:
                raise InvalidArgument(
                    f"column {position} has {len(typed[0])} values for {count} rows", reason="INVALID_COLUMN"
                )
            if not nulls:
                # The request's own list: read where the rows are bound, off the event loop.
                columns.append(typed[0])
                continue
            values: list[SqlValue] = list(typed[0])
        elif len(set(nulls)) == count:
            values = [None] * count
        else:
            raise InvalidArgument(
                f"column {position} has no values: fill one typed list, or list every row in null_rows",
                reason="INVALID_COLUMN",
            )
        for row in nulls:
            if row >= count:
                raise InvalidArgument(
                    f"column {position} marks row {row} NULL, but there are {count} rows", reason="INVALID_COLUMN"
                )
            values[row] = None
        columns.append(values)
    return Columns(count, columns)


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
