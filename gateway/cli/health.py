"""`strata health`: the standard gRPC health check of the gateway and of each layer, as a table."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cli import output
from gateway.cli.connection import Target, is_unreachable, status_of

# The same variables (and defaults) the gateway reads to dial its layers.
LAYERS = (
    ("inference", "STRATA_INFERENCE_ADDR", "127.0.0.1:50051"),
    ("vector", "STRATA_VECTOR_ADDR", "127.0.0.1:50052"),
    ("metadata", "STRATA_METADATA_ADDR", "127.0.0.1:50053"),
    ("blob", "STRATA_BLOB_ADDR", "127.0.0.1:50054"),
)
CHECK_TIMEOUT_SECONDS = 3.0
SERVING = "SERVING"


def targets(gateway_address: str) -> list[tuple[str, str]]:
    return [("gateway", gateway_address)] + [(name, os.environ.get(env) or default) for name, env, default in LAYERS]


def check(target: Target, address: str) -> tuple[str, str]:
    """(status, detail): SERVING, NOT_SERVING..., or UNREACHABLE / the error's status."""
    with target.channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=target.deadline(CHECK_TIMEOUT_SECONDS),
                metadata=target.metadata,
            )
        except grpc.RpcError as exc:
            name, message = status_of(exc)
            if is_unreachable(exc):  # grpc core's long message ends with the cause, e.g. "Connection refused"
                return "UNREACHABLE", message.rsplit(": ", 1)[-1].strip(" []")
            return name, message
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), ""


def run_health(target: Target) -> int:
    services = targets(target.address)
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        results = list(pool.map(lambda item: check(target, item[1]), services))
    rows = [
        [name, address, status, detail] for (name, address), (status, detail) in zip(services, results, strict=True)
    ]
    print(output.table(["SERVICE", "ADDRESS", "STATUS", "DETAIL"], rows))
    if results[0][0] == "UNREACHABLE":
        sys.stderr.write(f"hint: no Strata gateway answered at {target.address}: is it running? try `make run`\n")
    return 0 if all(status == SERVING for status, _ in results) else 1
