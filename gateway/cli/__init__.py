"""The `strata` command line: a gRPC client of the gateway for collections, ingest, search, ask and health."""

from __future__ import annotations

from gateway.cli.main import main

__all__ = ["main"]
