"""The committed generated code matches the protos, and the protos pass buf lint."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos() -> None:
    result = subprocess.run(
        [sys.executable, "tools/genproto.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_protos_pass_buf_lint() -> None:
    buf = shutil.which("buf") or str(Path(sys.executable).parent / "buf")
    if not Path(buf).exists():
        pytest.skip("buf not installed (pip install buf-bin)")
    result = subprocess.run([buf, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_gateway_rpc_has_an_http_rule() -> None:
    from google.api import annotations_pb2

    from strata.gateway.v1 import gateway_pb2

    service = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"]
    for method in service.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        assert rule.WhichOneof("pattern"), f"{method.name} has no google.api.http annotation"


def test_every_rpc_and_field_is_commented() -> None:
    from google.protobuf import descriptor_pb2

    from strata.blob.v1 import blob_pb2
    from strata.gateway.v1 import gateway_pb2
    from strata.inference.v1 import inference_pb2
    from strata.metadata.v1 import metadata_pb2
    from strata.vector.v1 import vector_pb2

    for module in (inference_pb2, vector_pb2, metadata_pb2, blob_pb2, gateway_pb2):
        # Comments live in the .proto source; check them there, by declaration line.
        path = ROOT / "protos" / module.DESCRIPTOR.name
        lines = path.read_text().splitlines()
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        for i, line in enumerate(lines):
            stripped = line.strip()
            declares = stripped.startswith(("rpc ", "message ", "enum ", "service ")) or (
                stripped.endswith(";")
                and "=" in stripped
                and not stripped.startswith(("option", "//", "syntax", "package", "import", "reserved"))
                and "(google.api.http)" not in stripped
            )
            if declares and not lines[i - 1].strip().startswith("//"):
                raise AssertionError(f"{path.name}:{i + 1} has no comment: {stripped}")
