"""`python -m gateway`: serve the gateway on its configured addresses until SIGTERM/SIGINT."""

from __future__ import annotations

from gateway.config import GatewaySettings
from gateway.server import create_server
from services.runtime.server import run


def main() -> None:
    run(GatewaySettings, lambda settings: create_server(None, settings))


if __name__ == "__main__":
    main()
