"""A server lifts its soft limit on open files to the hard one when it starts."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.runtime.limits import raise_open_file_limit
from tests.support.servers import REPO_ROOT, free_port, wait_serving


def _lowered(*argv: str) -> list[str]:
    """A command running `argv` with the soft limit lowered to 256. A launcher sets it and
    execs: `preexec_fn` runs Python in a child forked from this multi-threaded process, which
    can deadlock there (a lock held by another thread at the fork) before the exec."""
    launcher = (
        "import os, resource, sys; r = resource.RLIMIT_NOFILE; "
        "resource.setrlimit(r, (256, resource.getrlimit(r)[1])); os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", launcher, *argv]


def test_the_soft_limit_is_raised_to_the_hard_one() -> None:
    code = (
        "from services.runtime.limits import raise_open_file_limit as r; import resource as x; "
        "print(r(), *x.getrlimit(x.RLIMIT_NOFILE))"
    )
    out = subprocess.run(
        _lowered(sys.executable, "-c", code), cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    now, soft, hard = (int(part) for part in out.stdout.split())
    assert now == soft > 256
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert raise_open_file_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # again: nothing to do


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the limit from /proc")
def test_a_service_starts_with_the_raised_limit(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env.update(PYTHONPATH=str(REPO_ROOT), STRATA_DATA_DIR=str(tmp_path), STRATA_VECTOR_LISTEN=address)
    with open(tmp_path / "server.log", "wb") as log:
        server = subprocess.Popen(
            _lowered(sys.executable, "-m", "services.vector"),
            env=env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=log,
        )
    try:
        wait_serving(address, 60)
        limits = Path(f"/proc/{server.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        soft, hard = line.split()[3:5]
        assert soft == hard and soft != "256"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
