"""Shared pytest setup: tests import the repo's packages and never see the caller's STRATA_* settings."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("STRATA_LOG_LEVEL", "warning")


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings are read from the environment; a developer's STRATA_* must not leak into tests.
    for name in list(os.environ):
        if name.startswith("STRATA_") and name not in (
            "STRATA_REQUIRE_BACKENDS",
            "STRATA_LOG_LEVEL",
            "STRATA_CONFORMANCE_ADDR",
        ):
            monkeypatch.delenv(name, raising=False)
