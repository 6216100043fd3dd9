"""Request messages from HTTP (path variables, query parameters, JSON body) and JSON from responses.

JSON follows the proto3 JSON mapping: lowerCamelCase or original field names on
input, lowerCamelCase on output, int64 as strings, bytes as base64, enums by name.
Unknown fields are rejected.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.runtime.errors import InvalidArgument


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


_WRAPPERS_AS_SCALARS = {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}


def to_json(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
    return result


def _field(descriptor: Any, name: str) -> FieldDescriptor | None:
    return descriptor.fields_by_name.get(name) or next((f for f in descriptor.fields if f.json_name == name), None)


def _scalar(field: FieldDescriptor, raw: str, name: str) -> Any:
    if field.type == FieldDescriptor.TYPE_BOOL:
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise InvalidArgument(f"query parameter {name}={raw!r} is not a boolean", reason="BAD_QUERY_PARAMETER")
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        try:
            return float(raw)
        except ValueError:
            raise InvalidArgument(
                f"query parameter {name}={raw!r} is not a number", reason="BAD_QUERY_PARAMETER"
            ) from None
    return raw  # strings, enums by name, and integers (the JSON mapping accepts them as strings)


def _set_path(target: dict[str, Any], descriptor: Any, dotted: str, values: Sequence[str]) -> None:
    parts = dotted.split(".")
    node: dict[str, Any] = target
    desc: Any = descriptor
    for i, part in enumerate(parts):
        field = _field(desc, part)
        if field is None:
            raise InvalidArgument(f"unknown field {dotted!r}", reason="UNKNOWN_FIELD")
        last = i == len(parts) - 1
        if last:
            message_type = field.message_type
            if message_type is not None and message_type.full_name not in _WRAPPERS_AS_SCALARS:
                raise InvalidArgument(f"field {dotted!r} cannot be set from the URL", reason="BAD_QUERY_PARAMETER")
            converted = [_scalar(field, v, dotted) for v in values]
            is_repeated = field.is_repeated
            node[field.name] = converted if is_repeated else converted[-1]
        else:
            if field.type != FieldDescriptor.TYPE_MESSAGE:
                raise InvalidArgument(f"field {'.'.join(parts[: i + 1])!r} has no subfields", reason="UNKNOWN_FIELD")
            node = node.setdefault(field.name, {})
            desc = field.message_type


def build_request(
    message_cls: type[Message],
    path_params: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    body: bytes | None,
    body_field: str,
) -> Message:
    """The request message; INVALID_ARGUMENT for malformed JSON, unknown fields or bad values."""
    descriptor = message_cls.DESCRIPTOR
    data: dict[str, Any] = {}
    if body_field and body:
        try:
            parsed = json.loads(body, parse_constant=_refuse_constant)
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise InvalidArgument(f"request body is not valid JSON: {exc}", reason="BAD_JSON") from exc
        if body_field == "*":
            if not isinstance(parsed, dict):
                raise InvalidArgument("request body must be a JSON object", reason="BAD_JSON")
            data = parsed
        else:
            data = {body_field: parsed}
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key, []).append(value)
    for key, values in grouped.items():
        _set_path(data, descriptor, key, values)
    for key, value in path_params.items():
        _set_path(data, descriptor, key, [value])
    message = message_cls()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise InvalidArgument(f"invalid request: {exc}", reason="BAD_REQUEST_FIELDS") from exc
    return message
