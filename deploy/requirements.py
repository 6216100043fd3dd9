"""Print the requirements in pyproject.toml (dependencies plus the named extras), one a line.

The Dockerfiles install these before copying the code, so that editing the code does not
invalidate the image layer holding the dependencies; pyproject.toml stays the only list.

    python deploy/requirements.py pyproject.toml milvus postgres s3 > requirements.txt
"""

from __future__ import annotations

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"{pyproject} declares no extra named {', '.join(unknown)}")
    found = list(project.get("dependencies", []))
    for extra in extras:
        found.extend(optional[extra])
    return found


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit("usage: requirements.py PYPROJECT [EXTRA...]")
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
