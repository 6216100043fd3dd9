"""Domain errors shared by every Strata service.

Cores and backends raise these; they never build gRPC statuses themselves. The
interceptor in `services.runtime.interceptor` maps each to its status code plus a
`google.rpc.ErrorInfo` (reason, domain, metadata), and the gateway's REST adapter
maps the same codes to HTTP. Anything else that escapes becomes INTERNAL with a
generic message and a logged traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

ERROR_DOMAIN = "strata.dev"


class StrataError(Exception):
    """A failure with a gRPC status code, a machine-readable reason and a message for people."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(StrataError):
    """The request is malformed: the caller must change it."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class NotFound(StrataError):
    """A named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(StrataError):
    """A resource with that name or key exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(StrataError):
    """The system is not in the state the request needs (a precondition, a non-empty bucket...)."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class OutOfRange(StrataError):
    """A position is past the end (e.g. a byte range starting after the object)."""

    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class ResourceExhausted(StrataError):
    """A limit was hit: queue depth, size, rate."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(StrataError):
    """A dependency is down or busy; retrying later may succeed."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(StrataError):
    """The work did not finish in its time limit."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(StrataError):
    """No valid credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(StrataError):
    """Valid credentials that may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Aborted(StrataError):
    """A concurrent change won; retry the whole operation."""

    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class Unimplemented(StrataError):
    """This server does not offer the operation (e.g. a backend without the feature)."""

    code = grpc.StatusCode.UNIMPLEMENTED
    default_reason = "UNIMPLEMENTED"
