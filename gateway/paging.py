"""Page size and token rules shared by the gateway's List RPCs: the token is the last key returned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from services.runtime.errors import InvalidArgument

T = TypeVar("T")
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def page_limit(page_size: int) -> int:
    """Rows one page holds; INVALID_ARGUMENT outside 0..1000 (0 means the default)."""
    if not 0 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size {page_size} is outside 0..{MAX_PAGE_SIZE}", reason="BAD_PAGE_SIZE")
    return page_size or DEFAULT_PAGE_SIZE


def split_page(records: Sequence[T], limit: int, key: Callable[[T], str]) -> tuple[list[T], str]:
    """`records` were fetched with limit + 1: the page, and the next token ("" on the last page)."""
    if len(records) > limit:
        return list(records[:limit]), key(records[limit - 1])
    return list(records), ""
