"""Validation of what users name and attach: bucket names, keys, metadata, content types, conditions.

Shared by every backend so that the same input is accepted or refused everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.runtime.errors import InvalidArgument

MAX_KEY_BYTES = 1024
MAX_METADATA_BYTES = 2048
MAX_CONTENT_TYPE_CHARS = 256
DEFAULT_CONTENT_TYPE = "application/octet-stream"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
# Lowercase because S3 sends metadata as case-insensitive HTTP headers.
_METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def bucket_name(name: str) -> str:
    if not _BUCKET.match(name) or ".." in name or _IPV4.match(name):
        raise InvalidArgument(
            f"bucket name {name!r} is invalid: use 3-63 lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit",
            reason="INVALID_BUCKET_NAME",
            metadata={"bucket": name},
        )
    return name


def object_key(key: str, field: str = "key") -> str:
    if not key:
        raise InvalidArgument(f"{field} is empty; keys are 1-1,024 bytes of UTF-8", reason="INVALID_KEY")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgument(f"{field} is not valid UTF-8", reason="INVALID_KEY") from None
    if size > MAX_KEY_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes of UTF-8; the limit is {MAX_KEY_BYTES}",
            reason="KEY_TOO_LONG",
            metadata={"bytes": str(size)},
        )
    if "\x00" in key:
        raise InvalidArgument(f"{field} {key!r} contains a NUL character", reason="INVALID_KEY")
    return key


def content_type(value: str) -> str:
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > MAX_CONTENT_TYPE_CHARS or _CONTROL.search(value) or not value.isascii():
        raise InvalidArgument(
            f"content type {value[:80]!r} is invalid: use at most {MAX_CONTENT_TYPE_CHARS} printable ASCII characters",
            reason="INVALID_CONTENT_TYPE",
        )
    return value


def metadata(values: Mapping[str, str]) -> dict[str, str]:
    total = 0
    for name, value in values.items():
        if not _METADATA_KEY.match(name):
            raise InvalidArgument(
                f"metadata key {name[:80]!r} is invalid: use 1-128 lowercase letters, digits, '_', '-' and '.'",
                reason="INVALID_METADATA",
                metadata={"key": name[:128]},
            )
        if _CONTROL.search(value):
            raise InvalidArgument(f"metadata value of {name!r} contains a control character", reason="INVALID_METADATA")
        total += len(name.encode()) + len(value.encode())
    if total > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"metadata is {total} bytes; the limit is {MAX_METADATA_BYTES} (keys plus values, UTF-8)",
            reason="METADATA_TOO_LARGE",
        )
    return dict(sorted(values.items()))


def etag(value: str) -> str:
    """An ETag as a user may send it: quotes and a weak prefix are tolerated."""
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')
