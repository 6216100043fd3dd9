"""Opaque page tokens: where the previous page stopped."""

from __future__ import annotations

from services.runtime import page_tokens
from services.runtime.errors import InvalidArgument

MAX_PAGE_SIZE = 1000


def page_size(requested: int) -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument(
            f"page_size {requested} is out of range; use 0..{MAX_PAGE_SIZE} (0 means {MAX_PAGE_SIZE})",
            reason="INVALID_PAGE_SIZE",
        )
    return requested or MAX_PAGE_SIZE


def encode(kind: str, position: str, skip_prefix: str = "") -> str:
    return page_tokens.encode({"k": kind, "after": position, "skip": skip_prefix})


def decode(kind: str, token: str) -> tuple[str, str]:
    """(position, skip_prefix) of a token made by `encode(kind, ...)`; ("", "") for no token."""
    if not token:
        return "", ""
    try:
        body = page_tokens.decode(token)
        if body["k"] != kind or not isinstance(body["after"], str) or not isinstance(body["skip"], str):
            raise ValueError(kind)
        return body["after"], body["skip"]
    except (ValueError, KeyError, TypeError):
        raise InvalidArgument(
            f"page_token {token[:40]!r} is not a token this listing returned", reason="INVALID_PAGE_TOKEN"
        ) from None
