"""schemathesis against the live REST server, from its own /openapi.json: no 5xx, and every
response matches its schema (status code, content type, body).

Ask is left out: each generated example would run the local LLM (its REST path is covered in
test_rest.py and its behaviour in test_gateway.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.stack import Stack


def test_rest_api_conforms_to_its_openapi(stack: Stack, tmp_path: Path) -> None:
    binary = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [
            binary,
            "run",
            f"{stack.rest}/openapi.json",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-operation-id",
            "Ask",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--workers",
            "1",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
