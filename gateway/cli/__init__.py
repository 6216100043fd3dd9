"""The `strata` command line: a gRPC client of the gateway for collections, ingest, search, ask and health."""

from __future__ import annotations

import os

# grpc core logs connection and TLS handshake details on stderr; the CLI explains failures itself.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from gateway.cli.main import main

__all__ = ["main"]
