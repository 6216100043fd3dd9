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


def check(address: str, service: str = "", timeout: float = 3.0) -> str:
    """The server's status name (SERVING, NOT_SERVING...), or the gRPC code name when it did not answer."""
    try:
        with _channel(address) as channel:
            request = health_pb2.HealthCheckRequest(service=service)
            reply = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: list[str]) -> int:
    address = argv[0] if argv else "127.0.0.1:50050"
    status = check(address, argv[1] if len(argv) > 1 else "")
    print(f"{address}: {status}", file=sys.stdout if status == "SERVING" else sys.stderr)
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
