"""Database names: a closed alphabet, so a name can never be a path or need quoting."""

from __future__ import annotations

import base64
import binascii
import re

from services.runtime.errors import InvalidArgument

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_name(name: str, what: str = "database name") -> str:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{what} {name!r} is invalid: use 1-64 letters, digits, '-' or '_'",
            reason="INVALID_DATABASE_NAME",
            metadata={"name": name[:100]},
        )
    return name


def page_token_for(last_name: str) -> str:
    return base64.urlsafe_b64encode(last_name.encode()).decode().rstrip("=")


def name_from_page_token(token: str) -> str:
    try:
        name = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        name = ""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(f"page_token {token!r} is not one this server issued", reason="INVALID_PAGE_TOKEN")
    return name
