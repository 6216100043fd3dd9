"""The gateway driven from Node.js (@grpc/grpc-js + @grpc/proto-loader) straight from protos/: no Python client."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import missing_backend
from tests.support.servers import free_port
from tests.support.stack import Stack

NODE_DIR = Path(__file__).resolve().parent / "node"
CLIENT = NODE_DIR / "client.mjs"
PACKAGES = ("@grpc/grpc-js", "@grpc/proto-loader")


def npm_ci(npm: str) -> None:
    """Install the locked dependencies on a fresh checkout (node_modules is not committed)."""
    done = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(f"`npm ci` in {NODE_DIR} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@pytest.fixture(scope="module")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        missing_backend("node not installed")
    assert node is not None and npm is not None
    if not all((NODE_DIR / "node_modules" / package / "package.json").is_file() for package in PACKAGES):
        npm_ci(npm)
    return node


def run_client(node: str, address: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run([node, str(CLIENT), address], capture_output=True, text=True, timeout=300, cwd=NODE_DIR)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line; stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.returncode, json.loads(lines[0]), done.stderr


def test_node_client_drives_the_gateway(node: str, stack: Stack) -> None:
    code, report, stderr = run_client(node, stack.gateway)
    assert code == 0 and report["ok"] is True, f"{report}\n{stderr}"

    assert report["create_collection"]["dimensions"] == 384
    assert report["put_document"]["bees"]["status"] == "DOCUMENT_STATUS_READY"
    assert report["search"][0]["document_id"] == "bees"
    assert report["get_document"]["id"] == "bees"
    assert report["list_documents"] == ["bees", "volcano"]
    assert report["delete_document"]["remaining"] == ["volcano"]
    assert report["delete_collection"]["get_after_delete"] == "NOT_FOUND"

    error = report["error"]
    assert (error["code"], error["status"]) == (5, "NOT_FOUND")
    assert error["name"] in error["message"]
    # The rich error model (google.rpc.Status + ErrorInfo in grpc-status-details-bin) is readable too.
    details = error["status_details"]
    assert details["code"] == 5 and details["message"] == error["message"]
    assert details["details"] == [
        {
            "type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "COLLECTION_NOT_FOUND",
            "domain": "strata.dev",
            "metadata": {"collection": error["name"]},
        }
    ]


def test_node_client_exits_non_zero_when_the_gateway_is_unreachable(node: str) -> None:
    code, report, _stderr = run_client(node, f"127.0.0.1:{free_port()}")
    assert code == 1
    assert report["ok"] is False
    assert report["failure"]["status"] == "UNAVAILABLE"
