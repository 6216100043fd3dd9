"""`python -m services.inference` as a process: start, crash, restart, clean stop, bad config."""

from __future__ import annotations

import subprocess
import sys
import time

import grpc
import pytest

from strata.inference.v1 import inference_pb2 as pb
from strata.inference.v1 import inference_pb2_grpc
from tests.support.servers import REPO_ROOT, ServerProcess, free_port


def embed_once(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        return len(stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30).embeddings[0].values)


@pytest.mark.slow
def test_sigkill_then_restart_serves_again_and_sigterm_stops_a_generation(tmp_path) -> None:
    address = f"127.0.0.1:{free_port()}"
    env = {
        "STRATA_INFERENCE_LISTEN": address,
        "STRATA_DATA_DIR": str(tmp_path),
        "STRATA_SHUTDOWN_GRACE_SECONDS": "1",
    }
    server = ServerProcess("services.inference", env, address, tmp_path / "server.log").start()
    assert embed_once(address) == 384
    server.kill()
    with ServerProcess("services.inference", env, address, tmp_path / "server.log") as again:
        assert embed_once(address) == 384
        with grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            request = pb.GenerateStreamRequest(
                messages=[pb.Message(role=pb.ROLE_USER, content="Tell a very long story.")],
                options=pb.GenerationOptions(max_tokens=2000, temperature=1.0, seed=3),
            )
            stream = stub.GenerateStream(request, timeout=120)
            assert next(stream).WhichOneof("event") == "delta"
            started = time.monotonic()
            # In-flight generation gets the 1 s grace, then is cancelled; the process exits cleanly.
            assert again.terminate(timeout=30) == 0
            assert time.monotonic() - started < 15


def test_a_bad_setting_exits_2_naming_it(tmp_path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "STRATA_INFERENCE_BACKEND": "gpu-cluster"}
    done = subprocess.run(
        [sys.executable, "-m", "services.inference"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=60
    )
    assert done.returncode == 2
    assert b"STRATA_INFERENCE_BACKEND" in done.stderr
