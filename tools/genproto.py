"""Generate the Python modules and type stubs of the Strata contracts.

    python tools/genproto.py            # write into ./strata (what is committed)
    python tools/genproto.py --check    # fail if ./strata differs from the protos

The generated tree is committed so that installing Strata needs no protoc; the
check keeps it honest (run by `make lint` and by tests/unit/test_generated_code.py).
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE = "strata"
LAYERS = ("inference", "vector", "metadata", "blob", "gateway")
DESCRIPTOR_SET = "descriptors.binpb"


def _plugin(name: str) -> str:
    """mypy-protobuf's plugins live beside the running interpreter, on PATH or not."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise SystemExit(f"{name} not found: pip install mypy-protobuf")
    return found


def generate(out_dir: Path) -> None:
    """Run protoc for every Strata proto into out_dir, with __init__.py files."""
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
        f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out=quiet:{out_dir}",
        f"--mypy_grpc_out=quiet:{out_dir}",
        # With comments (source info): the REST layer turns them into OpenAPI descriptions.
        f"--descriptor_set_out={out_dir / PACKAGE / DESCRIPTOR_SET}",
        "--include_source_info",
        "--include_imports",
        *protos,
    ]
    (out_dir / PACKAGE).mkdir(parents=True, exist_ok=True)
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    package_dir = out_dir / PACKAGE
    (package_dir / "__init__.py").write_text('"""Generated Strata contracts: strata.<layer>.v1."""\n')
    (package_dir / "py.typed").write_text("")
    for layer in LAYERS:
        (package_dir / layer / "__init__.py").write_text("")
        (package_dir / layer / "v1" / "__init__.py").write_text("")


def differences(left: Path, right: Path) -> list[str]:
    """Relative paths that differ between two generated trees (ignoring caches)."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        for name in cmp.left_only + cmp.right_only + cmp.diff_files + cmp.funny_files:
            if name != "__pycache__":
                found.append(prefix + name)
        for name, sub in cmp.subdirs.items():
            if name != "__pycache__":
                walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right, ignore=["__pycache__"]), "")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if not args.check:
        generate(ROOT)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = differences(Path(tmp) / PACKAGE, ROOT / PACKAGE)
    if stale:
        print("generated code is stale; run `make proto`:", *stale, sep="\n  ", file=sys.stderr)
        return 1
    print("generated code matches the protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
