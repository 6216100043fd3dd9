"""How the CLI reaches the gateway (address, API key, TLS) and how a failed call is told to the user."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc

from strata.gateway.v1 import gateway_pb2_grpc

ENV_ADDRESS = "STRATA_GATEWAY_ADDR"
ENV_API_KEY = "STRATA_API_KEY"
ENV_TLS_CA = "STRATA_TLS_CA_FILE"
DEFAULT_ADDRESS = "127.0.0.1:50050"

# A search with 100 long chunks can exceed gRPC's 4 MiB default.
_CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
# What grpc core says when no connection could be made at all (as opposed to the gateway answering UNAVAILABLE).
_UNREACHABLE_HINTS = (
    "failed to connect",
    "errors resolving",
    "dns resolution failed",
    "connection refused",
    "handshake",
)


class CliError(Exception):
    """A failure reported as `error: MESSAGE` on stderr, without a traceback."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Target:
    """The gateway to talk to, and how."""

    address: str
    api_key: str = ""
    tls_ca_file: str = ""
    timeout: float | None = None

    @classmethod
    def from_options(
        cls, address: str | None, api_key: str | None, tls_ca_file: str | None, timeout: float | None
    ) -> Target:
        """Flags win over the environment, which wins over the defaults."""
        return cls(
            address=address or os.environ.get(ENV_ADDRESS) or DEFAULT_ADDRESS,
            api_key=api_key if api_key is not None else os.environ.get(ENV_API_KEY, ""),
            tls_ca_file=tls_ca_file if tls_ca_file is not None else os.environ.get(ENV_TLS_CA, ""),
            timeout=timeout,
        )

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),) if self.api_key else ()

    def deadline(self, default: float | None) -> float | None:
        return self.timeout if self.timeout is not None else default

    def channel(self, address: str | None = None) -> grpc.Channel:
        target = address or self.address
        if not self.tls_ca_file:
            return grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
        try:
            roots = Path(self.tls_ca_file).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read the TLS CA file {self.tls_ca_file}: {exc.strerror}") from None
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates=roots), _CHANNEL_OPTIONS)

    def gateway(self, channel: grpc.Channel) -> gateway_pb2_grpc.GatewayServiceStub:
        return gateway_pb2_grpc.GatewayServiceStub(channel)


def status_of(exc: grpc.RpcError) -> tuple[str, str]:
    """(status name, message) of a failed call."""
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else None
    return (code.name if code is not None else "UNKNOWN"), (details or str(exc))


def is_unreachable(exc: grpc.RpcError) -> bool:
    name, message = status_of(exc)
    return name == "UNAVAILABLE" and any(hint in message.lower() for hint in _UNREACHABLE_HINTS)


def short_cause(exc: grpc.RpcError) -> str:
    """A few words on why no connection was made, for a table cell."""
    message = status_of(exc)[1]
    lowered = message.lower()
    for needle, cause in (
        ("handshake", "TLS handshake failed"),
        ("connection refused", "connection refused"),
        ("resolv", "cannot resolve the host"),
        ("socket closed", "connection closed by the server"),
    ):
        if needle in lowered:
            return cause
    return message


def unreachable_hint(exc: grpc.RpcError, target: Target, address: str | None = None) -> str:
    """What to try when no connection could be made; empty when the server did answer."""
    if not is_unreachable(exc):
        return ""
    where = address or target.address
    message = status_of(exc)[1].lower()
    if "handshake" in message:
        return (
            f"hint: the TLS handshake with {where} failed: the server may not serve TLS (drop --tls-ca / "
            f"{ENV_TLS_CA}), or its certificate is not signed by {target.tls_ca_file}"
        )
    if "socket closed" in message and not target.tls_ca_file:
        return (
            f"hint: {where} closed the connection: if it serves TLS, pass --tls-ca FILE (or set {ENV_TLS_CA}) "
            "with the CA that signed its certificate"
        )
    return (
        f"hint: no Strata gateway answered at {where}: is it running? try `make run` "
        f"(or point --address / {ENV_ADDRESS} at it)"
    )


def rpc_failure(exc: grpc.RpcError, target: Target) -> CliError:
    """The CliError for a failed gateway call: `STATUS: message`, plus a hint when nothing answered."""
    name, message = status_of(exc)
    hint = unreachable_hint(exc, target)
    return CliError(f"{name}: {message}" + (f"\n{hint}" if hint else ""))
