"""`python -m services.metadata`: serve the metadata service until signalled."""

from __future__ import annotations

from services.metadata.config import MetadataSettings
from services.metadata.server import create_server
from services.runtime.server import run


def main() -> None:
    run(MetadataSettings, lambda s: create_server(None, s))


if __name__ == "__main__":
    main()
