"""Nothing is downloaded at run time: the service loads and answers with no network but loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.support.servers import REPO_ROOT


def test_models_load_and_answer_without_a_network() -> None:
    unshare, ip = shutil.which("unshare"), shutil.which("ip") or "/usr/sbin/ip"
    if unshare is None or not os.path.exists(ip):
        pytest.skip("needs util-linux unshare and iproute2 ip to cut the network")
    probe = subprocess.run([unshare, "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {probe.stderr.decode().strip()}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = f"{ip} link set lo up && exec {sys.executable} -m tests.inference.offline_check"
    done = subprocess.run(
        [unshare, "-rn", "sh", "-c", command], cwd=REPO_ROOT, env=env, capture_output=True, timeout=180, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "OFFLINE-OK dims=384 tokens=" in done.stdout
