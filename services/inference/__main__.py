"""`python -m services.inference`: serve until SIGTERM/SIGINT."""

from __future__ import annotations

from services.inference.config import InferenceSettings
from services.inference.server import create_server
from services.runtime.server import run


def main() -> None:
    run(InferenceSettings, lambda s: create_server(None, s))


if __name__ == "__main__":
    main()
