"""gRPC status -> HTTP status and the JSON error body, in one place (the standard mapping)."""

from __future__ import annotations

import grpc

from services.runtime.errors import ERROR_DOMAIN, StrataError

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}


def error_body(error: StrataError) -> dict[str, object]:
    """`{"error": {"code", "status", "message", "details"}}`, details carrying the ErrorInfo."""
    return {
        "error": {
            "code": HTTP_STATUS.get(error.code, 500),
            "status": error.code.name,
            "message": error.message,
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": error.reason,
                    "domain": ERROR_DOMAIN,
                    "metadata": error.metadata,
                }
            ],
        }
    }
