"""One real Strata stack per test module, in-process on port 0, for clients that are not Python."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import Stack, run_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("polyglot")) as running:
        yield running
