"""One real Strata stack for the CLI tests, and a helper that runs `python -m gateway.cli` against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT
from tests.support.stack import Stack, run_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("cli-stack")) as running:
        yield running


def strata_env(gateway: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return {**clean, "PYTHONPATH": str(REPO_ROOT), "STRATA_GATEWAY_ADDR": gateway, **(extra or {})}


def run_cli(
    gateway: str, *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`strata ARGS...` as a user would run it: a new process, talking gRPC to `gateway`."""
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=strata_env(gateway, env),
        cwd=cwd or REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
