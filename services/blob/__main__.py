"""`python -m services.blob`: run the blob service until SIGTERM or SIGINT."""

from __future__ import annotations

from services.blob.config import BlobSettings
from services.blob.server import create_server
from services.runtime.server import run


def main() -> None:
    run(BlobSettings, lambda s: create_server(None, s))


if __name__ == "__main__":
    main()
