"""Print the requirements in pyproject.toml (dependencies plus the named extras), one a line.

The Dockerfiles install these before copying the code, so that editing the code does not
invalidate the image layer holding the dependencies; pyproject.toml stays the only list.
`--without NAME` leaves a distribution out (the images that never generate text skip
llama-cpp-python, which compiles from source).

    python deploy/requirements.py pyproject.toml milvus postgres s3 --without llama-cpp-python
"""

from __future__ import annotations

import re
import sys
import tomllib


def distribution(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.split(r"[\s\[<>=!~;(]", requirement.strip(), maxsplit=1)[0]).lower()


def requirements(pyproject: str, extras: list[str], without: frozenset[str] = frozenset()) -> list[str]:
    with open(pyproject, "rb") as handle:
        project = tomllib.load(handle)["project"]
    optional = project.get("optional-dependencies", {})
    unknown = sorted(set(extras) - set(optional))
    if unknown:
        raise SystemExit(f"{pyproject} declares no extra named {', '.join(unknown)}")
    found = list(project.get("dependencies", []))
    for extra in extras:
        found.extend(optional[extra])
    left_out = {distribution(name) for name in without}
    missing = left_out - {distribution(r) for r in found}
    if missing:
        raise SystemExit(f"--without {', '.join(sorted(missing))}: not a requirement in {pyproject}")
    return [r for r in found if distribution(r) not in left_out]


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: requirements.py PYPROJECT [EXTRA...] [--without DISTRIBUTION...]")
    pyproject, rest = argv[0], argv[1:]
    extras, without = rest, []
    if "--without" in rest:
        at = rest.index("--without")
        extras, without = rest[:at], rest[at + 1 :]
    print("\n".join(requirements(pyproject, extras, frozenset(without))))


if __name__ == "__main__":
    main(sys.argv[1:])
