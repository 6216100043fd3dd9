"""`python -m services.runtime.healthcheck [HOST:PORT] [SERVICE]`: exit 0 when the server reports SERVING.

Used by container HEALTHCHECKs; speaks the standard grpc.health.v1 protocol, so it checks any
Strata server (or any other gRPC server that implements health).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _channel(address: str) -> grpc.Channel:
    """TLS when this container's server serves TLS (STRATA_TLS_CERT_FILE), trusting STRATA_TLS_CA_FILE
    or, for a self-signed certificate, the certificate itself."""
    cert = os.environ.get("STRATA_TLS_CERT_FILE")
    if not cert:
        return grpc.insecure_channel(address)
    roots = Path(os.environ.get("STRATA_TLS_CA_FILE") or cert).read_bytes()
    host = address.rsplit(":", 1)[0]
    options = [("grpc.ssl_target_name_override", "localhost")] if host in ("127.0.0.1", "0.0.0.0") else []
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots), options=options)


def main(argv: list[str]) -> int:
    address = argv[0] if argv else "127.0.0.1:50050"
    service = argv[1] if len(argv) > 1 else ""
    try:
        with _channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=3)
    except grpc.RpcError as exc:
        print(f"{address}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{address}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
