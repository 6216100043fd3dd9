"""Each service as its own process: `python -m ...` serves health on its address, stops cleanly on
SIGTERM within the grace period, and refuses a bad setting naming the variable."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.servers import REPO_ROOT, ServerProcess, free_port, wait_serving

LAYERS = ["inference", "vector", "metadata", "blob"]


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_process_serves_and_stops_on_sigterm(layer: str, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {f"STRATA_{layer.upper()}_LISTEN": address, "STRATA_DATA_DIR": str(tmp_path)}
    server = ServerProcess(f"services.{layer}", env, address, tmp_path / "log").start(timeout=120)
    started = time.monotonic()
    assert server.terminate(timeout=30) == 0
    assert time.monotonic() - started < 15
    log = (tmp_path / "log").read_text()
    assert '"msg": "stopped"' in log
    assert '"msg": "serving"' in log


def test_gateway_waits_for_layers_and_still_stops_on_sigterm(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    nowhere = f"127.0.0.1:{free_port()}"
    env = {
        "STRATA_GATEWAY_LISTEN": address,
        "STRATA_GATEWAY_REST_LISTEN": "",
        "STRATA_DATA_DIR": str(tmp_path),
        **{f"STRATA_{layer.upper()}_ADDR": nowhere for layer in LAYERS},
    }
    server = ServerProcess("gateway", env, address, tmp_path / "log")
    with pytest.raises(TimeoutError):
        server.start(timeout=3)  # answers health, but NOT_SERVING while its layers are down
    server = ServerProcess("gateway", env, address, tmp_path / "log")
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"], env=server.env, cwd=REPO_ROOT, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert server.terminate(timeout=20) == 0


@pytest.mark.parametrize(
    ("module", "variable", "value"),
    [
        ("services.vector", "STRATA_VECTOR_BACKEND", "annoy"),
        ("services.blob", "STRATA_LOG_LEVEL", "chatty"),
        ("gateway", "STRATA_GATEWAY_LISTEN", "0.0.0.0:50050"),
        ("services.metadata", "STRATA_METADATA_LISTN", "127.0.0.1:1"),
    ],
)
def test_bad_setting_fails_at_start_naming_the_variable(module: str, variable: str, value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), variable: value},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert variable in result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_port_fails_at_start_saying_so(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        address = f"127.0.0.1:{holder.getsockname()[1]}"
        result = subprocess.run(
            [sys.executable, "-m", "services.blob"],
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(REPO_ROOT),
                "STRATA_BLOB_LISTEN": address,
                "STRATA_DATA_DIR": str(tmp_path),
            },
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1, result.stderr
    assert f"cannot listen on {address}" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_health_check_command(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {"STRATA_BLOB_LISTEN": address, "STRATA_DATA_DIR": str(tmp_path)}
    with ServerProcess("services.blob", env, address, tmp_path / "log"):
        wait_serving(address)
        ok = subprocess.run(
            [sys.executable, "-m", "services.runtime.healthcheck", address], cwd=REPO_ROOT, capture_output=True
        )
        assert ok.returncode == 0 and b"SERVING" in ok.stdout
    down = subprocess.run(
        [sys.executable, "-m", "services.runtime.healthcheck", address], cwd=REPO_ROOT, capture_output=True
    )
    assert down.returncode == 1
