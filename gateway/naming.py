"""Validation of what users name and send (names, metadata, filters), and how the gateway names
things in each layer."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from google.protobuf import json_format, struct_pb2

from services.runtime.errors import InvalidArgument

_COLLECTION = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
RESERVED_PREFIX = "_strata_"
DOC_KEY = "_strata_doc"
GENERATION_KEY = "_strata_gen"
MAX_METADATA_BYTES = 8 * 1024


def check_collection_name(name: str) -> str:
    if not _COLLECTION.match(name):
        raise InvalidArgument(
            f"collection name {name!r} is invalid: use 1-63 lowercase letters, digits and '-', starting with a letter",
            reason="BAD_COLLECTION_NAME",
        )
    return name


def check_document_id(document_id: str) -> str:
    raw = document_id.encode()
    if not raw or len(raw) > 256:
        raise InvalidArgument(f"document id must be 1-256 bytes of UTF-8, got {len(raw)}", reason="BAD_DOCUMENT_ID")
    if any(ord(c) < 32 or ord(c) == 127 for c in document_id):
        raise InvalidArgument("document id must not contain control characters", reason="BAD_DOCUMENT_ID")
    return document_id


def user_dict(struct: struct_pb2.Struct, what: str, reason: str) -> dict[str, Any]:
    """A caller's Struct as a dict. A Struct can carry NaN and Infinity, which JSON (the form
    metadata is stored and filters are sent in) cannot: INVALID_ARGUMENT naming `what`."""
    try:
        return json_format.MessageToDict(struct)
    except ValueError as exc:
        raise InvalidArgument(f"{what} holds NaN or Infinity, which JSON cannot carry", reason=reason) from exc


def check_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"document metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}", reason="METADATA_TOO_LARGE"
        )
    for key in metadata:
        if key.startswith(RESERVED_PREFIX):
            raise InvalidArgument(f"metadata key {key!r} is reserved (prefix {RESERVED_PREFIX})", reason="RESERVED_KEY")
    return metadata


def check_filter(node: Any) -> None:
    """User filters may not reach the gateway's own bookkeeping keys."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.startswith(RESERVED_PREFIX):
                raise InvalidArgument(f"filter key {key!r} is reserved", reason="RESERVED_KEY")
            check_filter(value)
    elif isinstance(node, list):
        for item in node:
            check_filter(item)


def document_key(document_id: str) -> str:
    """A fixed-size, path-safe key for a document id, used in vector ids and blob keys."""
    return hashlib.sha256(document_id.encode()).hexdigest()[:32]


def vector_id(document_id: str, generation: int, index: int) -> str:
    return f"{document_key(document_id)}.{generation}.{index}"


def blob_prefix(collection: str) -> str:
    return f"{collection}/"


def blob_key(collection: str, document_id: str, generation: int) -> str:
    return f"{collection}/{document_key(document_id)}/{generation}"


def index_name(collection: str) -> str:
    return collection
