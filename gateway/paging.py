"""Page size and token rules shared by the gateway's List RPCs: a token carries the last key
returned and what it lists, so a token this service did not issue (or one from another listing)
is refused rather than read as a key."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from services.runtime import page_tokens
from services.runtime.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_limit(page_size: int) -> int:
    """Rows one page holds; INVALID_ARGUMENT outside 0..1000 (0 means the default)."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size {page_size} is outside 0..{MAX_PAGE_SIZE}", reason="BAD_PAGE_SIZE")
    return page_size or DEFAULT_PAGE_SIZE


def split_page(records: Sequence[T], limit: int, key: Callable[[T], str], listing: str) -> tuple[list[T], str]:
    """`records` were fetched with limit + 1: the page, and the next token ("" on the last page)."""
    if len(records) > limit:
        return list(records[:limit]), page_tokens.encode([listing, key(records[limit - 1])])
    return list(records), ""


def after_key(page_token: str, listing: str) -> str:
    """The key a page token says to start after ("" for none); INVALID_ARGUMENT for a token
    this service did not issue for `listing`."""
    if not page_token:
        return ""
    try:
        decoded = page_tokens.decode(page_token)
    except ValueError as exc:
        raise _bad_token(page_token, listing) from exc
    if not (isinstance(decoded, list) and len(decoded) == 2 and decoded[0] == listing and isinstance(decoded[1], str)):
        raise _bad_token(page_token, listing)
    return decoded[1]


def _bad_token(page_token: str, listing: str) -> InvalidArgument:
    return InvalidArgument(
        f"page_token {page_token[:40]!r} is not one this service issued for listing {listing}",
        reason="BAD_PAGE_TOKEN",
    )
