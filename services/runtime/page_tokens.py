"""Page tokens as the services issue them: a small JSON value, base64url without padding, so a
client treats it as opaque. Each listing checks what it decodes and words its own refusal."""

from __future__ import annotations

import base64
import json
from typing import Any


def encode(payload: Any) -> str:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(token: str) -> Any:
    """The value `encode` made; ValueError for anything else (binascii, UTF-8 and JSON errors all are)."""
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
