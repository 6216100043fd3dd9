"""`strata health`: the standard gRPC health check of the gateway and of each layer, as a table."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cli import output
from gateway.cli.connection import Target, is_unreachable, short_cause, status_of, unreachable_hint

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


def check(target: Target, address: str) -> tuple[str, str, str]:
    """(status, detail, hint): SERVING, NOT_SERVING..., or UNREACHABLE / the error's status."""
    with target.channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""),
                timeout=target.deadline(CHECK_TIMEOUT_SECONDS),
                metadata=target.metadata,
            )
        except grpc.RpcError as exc:
            if is_unreachable(exc):
                return "UNREACHABLE", short_cause(exc), unreachable_hint(exc, target, address)
            return (*status_of(exc), "")
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status), "", ""


def run_health(target: Target) -> int:
    services = targets(target.address)
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        results = list(pool.map(lambda item: check(target, item[1]), services))
    rows = [
        [name, address, status, detail] for (name, address), (status, detail, _) in zip(services, results, strict=True)
    ]
    print(output.table(["SERVICE", "ADDRESS", "STATUS", "DETAIL"], rows))
    gateway_hint = results[0][2]  # a layer's address comes from the environment, the gateway's from the user
    if gateway_hint:
        sys.stderr.write(gateway_hint + "\n")
    return 0 if all(status == SERVING for status, _, _ in results) else 1
