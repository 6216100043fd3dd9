"""An OpenAPI 3.1 document generated from the gateway's descriptors, comments included.

Comments come from the descriptor set that `tools/genproto.py` writes with source
info (strata/descriptors.binpb); schemas follow the proto3 JSON mapping.
"""

from __future__ import annotations

import html
import importlib.resources
import json
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, ServiceDescriptor

from gateway.rest.errors import HTTP_STATUS
from gateway.rest.routes import Route

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
}


@cache
def _comments() -> dict[str, str]:
    """Leading comments by full name (messages, fields, enums, values, services, methods)."""
    data = importlib.resources.files("strata").joinpath("descriptors.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data)
    found: dict[str, str] = {}
    for file in files.file:
        locations = {tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location}
        prefix = file.package + "." if file.package else ""

        def walk_message(
            message: Any, path: tuple[int, ...], name: str, locations: dict[tuple[int, ...], str] = locations
        ) -> None:
            found[name] = locations.get(path, "")
            for i, field in enumerate(message.field):
                found[f"{name}.{field.name}"] = locations.get((*path, 2, i), "")
            for i, nested in enumerate(message.nested_type):
                walk_message(nested, (*path, 3, i), f"{name}.{nested.name}")
            for i, enum in enumerate(message.enum_type):
                walk_enum(enum, (*path, 4, i), f"{name}.{enum.name}")

        def walk_enum(
            enum: Any, path: tuple[int, ...], name: str, locations: dict[tuple[int, ...], str] = locations
        ) -> None:
            found[name] = locations.get(path, "")
            for i, value in enumerate(enum.value):
                found[f"{name}.{value.name}"] = locations.get((*path, 2, i), "")

        for i, message in enumerate(file.message_type):
            walk_message(message, (4, i), prefix + message.name)
        for i, enum in enumerate(file.enum_type):
            walk_enum(enum, (5, i), prefix + enum.name)
        for i, service in enumerate(file.service):
            found[prefix + service.name] = locations.get((6, i), "")
            for j, method in enumerate(service.method):
                found[f"{prefix}{service.name}.{method.name}"] = locations.get((6, i, 2, j), "")
    return found


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def ref(self, descriptor: Descriptor, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
        if descriptor.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[descriptor.full_name])
        name = descriptor.full_name + ("Body" if exclude else "")
        if name not in self.components:
            self.components[name] = {}  # placeholder breaks recursion
            self.components[name] = self._message(descriptor, exclude)
        return {"$ref": f"#/components/schemas/{name}"}

    def _enum(self, enum: EnumDescriptor) -> dict[str, Any]:
        comments = _comments()
        lines = [f"- `{v.name}`: {comments.get(f'{enum.full_name}.{v.name}', '')}" for v in enum.values]
        return {
            "type": "string",
            "enum": [v.name for v in enum.values],
            "description": (comments.get(enum.full_name, "") + "\n" + "\n".join(lines)).strip(),
        }

    def field(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            entry = field.message_type
            assert entry is not None
            if entry.GetOptions().map_entry:
                schema: dict[str, Any] = {
                    "type": "object",
                    "additionalProperties": self.field(entry.fields_by_name["value"]),
                }
                return schema
            schema = self.ref(entry)
        elif field.type == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type is not None
            schema = self._enum(field.enum_type)
        else:
            schema = dict(_SCALARS[field.type])
        if field.is_repeated:
            schema = {"type": "array", "items": schema}
        return schema

    def _message(self, descriptor: Descriptor, exclude: frozenset[str]) -> dict[str, Any]:
        comments = _comments()
        properties: dict[str, Any] = {}
        for field in descriptor.fields:
            if field.name in exclude:
                continue
            schema = self.field(field)
            description = comments.get(f"{descriptor.full_name}.{field.name}", "")
            if description:
                schema = (
                    {**schema, "description": description}
                    if "$ref" not in schema
                    else {
                        "allOf": [schema],
                        "description": description,
                    }
                )
            properties[field.json_name] = schema
        return {
            "type": "object",
            "description": comments.get(descriptor.full_name, ""),
            "properties": properties,
            "additionalProperties": False,
        }


def _error_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message"],
                "properties": {
                    "code": {"type": "integer", "description": "HTTP status code."},
                    "status": {"type": "string", "description": "gRPC status name, e.g. NOT_FOUND."},
                    "message": {"type": "string", "description": "What was wrong, for people."},
                    "details": {"type": "array", "items": {"type": "object"}},
                },
            }
        },
    }


def _query_parameters(descriptor: Descriptor, exclude: set[str]) -> list[dict[str, Any]]:
    comments = _comments()
    parameters = []
    schemas = _Schemas()
    for field in descriptor.fields:
        if field.name in exclude or field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        parameters.append(
            {
                "name": field.name,
                "in": "query",
                "required": False,
                "description": comments.get(f"{descriptor.full_name}.{field.name}", ""),
                "schema": schemas.field(field),
            }
        )
    return parameters


def openapi_document(service: ServiceDescriptor, routes: list[Route], title: str = "Strata gateway") -> dict[str, Any]:
    comments = _comments()
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    error = {
        "description": "An error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for route in routes:
        method = route.method
        path = route.template
        item = paths.setdefault(path, {})
        verb = route.http_method.lower()
        success_content: dict[str, Any] = {"application/json": {"schema": schemas.ref(method.output_type)}}
        if verb in item:
            # Ask and AskStream share a path: one operation, content negotiated by Accept.
            if route.server_streaming:
                item[verb]["responses"]["200"]["content"]["text/event-stream"] = {
                    "schema": {
                        "type": "string",
                        "description": f"Server-Sent Events; each data line is a {method.output_type.name} in JSON.",
                    }
                }
                item[verb]["description"] += "\n\nWith `Accept: text/event-stream`: " + comments.get(
                    f"{service.full_name}.{method.name}", ""
                )
            continue
        if route.server_streaming:
            success_content = {"text/event-stream": {"schema": {"type": "string"}}}
        operation: dict[str, Any] = {
            "operationId": method.name,
            "summary": method.name,
            "description": comments.get(f"{service.full_name}.{method.name}", ""),
            "parameters": [
                {"name": v, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                for v in route.variables
            ],
            "responses": {
                "200": {"description": "OK", "content": success_content},
                "default": error,
            },
        }
        if route.body:
            body_schema = schemas.ref(method.input_type, exclude=frozenset(route.variables))
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body_schema}}}
        else:
            operation["parameters"] += _query_parameters(method.input_type, set(route.variables))
        item[verb] = operation
    components = {**schemas.components, "Error": _error_schema()}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "v1", "description": comments.get(service.full_name, "")},
        "paths": paths,
        "components": {"schemas": components},
        "x-status-codes": {code.name: http for code, http in HTTP_STATUS.items()},
    }


def docs_page(spec: dict[str, Any]) -> str:
    """A self-contained HTML page (no CDN, no script) listing every operation and its description."""
    rows = []
    for path, item in spec["paths"].items():
        for verb, op in item.items():
            rows.append(
                f"<section><h2><code>{verb.upper()} {html.escape(path)}</code> — {html.escape(op['operationId'])}</h2>"
                f"<pre>{html.escape(op['description'])}</pre></section>"
            )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Strata REST API</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}pre{white-space:pre-wrap}</style></head>"
        f"<body><h1>{html.escape(spec['info']['title'])}</h1><p>{html.escape(spec['info']['description'])}</p>"
        "<p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>.</p>"
        + "".join(rows)
        + "<h2>Schemas</h2><pre>"
        + html.escape(json.dumps(spec["components"]["schemas"], indent=2))
        + "</pre></body></html>"
    )
