"""Skip-or-fail policy for tests that need an external engine (PostgreSQL, Milvus, S3 servers).

Locally, a missing engine skips its tests with the reason. In CI,
STRATA_REQUIRE_BACKENDS=1 turns that skip into a failure so nothing is silently
left out.
"""

from __future__ import annotations

import os

import pytest


def backends_required() -> bool:
    return os.environ.get("STRATA_REQUIRE_BACKENDS", "") in ("1", "true", "yes")


def missing_backend(reason: str) -> None:
    """Skip (locally) or fail (CI) a test whose backend server is not available."""
    if backends_required():
        pytest.fail(f"backend required but unavailable: {reason}")
    pytest.skip(reason)
