"""`python -m services.vector`: run the vector service until SIGTERM or SIGINT."""

from __future__ import annotations

from services.runtime.server import run
from services.vector.config import VectorSettings
from services.vector.server import create_server


def main() -> None:
    run(VectorSettings, lambda s: create_server(None, s))


if __name__ == "__main__":
    main()
