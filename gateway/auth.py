"""API keys, read-only keys and per-key rate limits, shared by the gRPC interceptor and the REST adapter.

Keys are kept only as SHA-256 digests and compared in constant time. A missing or
unknown key is UNAUTHENTICATED (401); a read-only key calling a write is
PERMISSION_DENIED (403); a key over its rate is RESOURCE_EXHAUSTED (429) with the
seconds to wait.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import GatewaySettings
from services.runtime.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.runtime.settings import ConfigError

# RPCs that change state; read-only keys may call everything else.
WRITE_METHODS = frozenset(
    {
        "strata.gateway.v1.GatewayService.CreateCollection",
        "strata.gateway.v1.GatewayService.DeleteCollection",
        "strata.gateway.v1.GatewayService.PutDocument",
        "strata.gateway.v1.GatewayService.DeleteDocument",
    }
)


@dataclass(frozen=True)
class ApiKey:
    digest: bytes
    read_only: bool

    @property
    def key_id(self) -> str:
        return self.digest.hex()[:12]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(settings: GatewaySettings) -> list[ApiKey]:
    keys: list[ApiKey] = []
    for item in filter(None, (part.strip() for part in settings.api_keys.split(","))):
        secret, _, flag = item.partition(":")
        if flag not in ("", "ro"):
            raise ConfigError(f"STRATA_API_KEYS: unknown flag {flag!r} (use KEY or KEY:ro)")
        keys.append(ApiKey(_digest(secret), flag == "ro"))
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"STRATA_API_KEYS_FILE={path}: {exc.strerror}") from None
        for number, line in enumerate(lines, start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) > 2 or (len(words) == 2 and words[1] != "read-only"):
                raise ConfigError(f"STRATA_API_KEYS_FILE={path}:{number}: expected `KEY [read-only]`")
            secret = words[0]
            if secret.startswith("sha256:"):
                try:
                    digest = bytes.fromhex(secret[7:])
                except ValueError:
                    digest = b""
                if len(digest) != 32:
                    raise ConfigError(f"STRATA_API_KEYS_FILE={path}:{number}: sha256: needs 64 hex digits")
            else:
                digest = _digest(secret)
            keys.append(ApiKey(digest, len(words) == 2))
    return keys


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(settings: GatewaySettings, keys: list[ApiKey]) -> None:
    """Without keys the gateway refuses to listen beyond loopback."""
    if keys:
        return
    for name, address in (
        ("STRATA_GATEWAY_LISTEN", settings.listen),
        ("STRATA_GATEWAY_REST_LISTEN", settings.rest_listen),
    ):
        if address and not is_loopback(address):
            raise ConfigError(
                f"{name}={address} is not a loopback address and no API keys are configured: "
                "set STRATA_API_KEYS (or STRATA_API_KEYS_FILE), or bind 127.0.0.1"
            )


class TokenBucket:
    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.capacity = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> float:
        """0 when allowed, else the seconds until a token is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class Guard:
    """Decides whether a call with these credentials may run now."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.keys = parse_keys(settings)
        check_exposure(settings, self.keys)
        self.rate = settings.rate_limit_per_second
        self.burst = settings.rate_limit_burst
        self._buckets: dict[str, TokenBucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.rate > 0

    def _authenticate(self, authorization: str | None) -> ApiKey | None:
        if not self.keys:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("missing API key: send `Authorization: Bearer KEY`", reason="NO_API_KEY")
        digest = _digest(token.strip())
        found = None
        for key in self.keys:  # every key is compared, so timing does not tell which one matched
            if hmac.compare_digest(key.digest, digest):
                found = key
        if found is None:
            raise Unauthenticated("API key is not valid", reason="BAD_API_KEY")
        return found

    def check(self, authorization: str | None, method: str, client: str) -> None:
        key = self._authenticate(authorization)
        if key is not None and key.read_only and method in WRITE_METHODS:
            raise PermissionDenied(
                f"this API key is read-only and cannot call {method.rsplit('.', 1)[-1]}", reason="READ_ONLY_KEY"
            )
        if self.rate > 0:
            bucket_id = key.key_id if key is not None else client
            bucket = self._buckets.setdefault(bucket_id, TokenBucket(self.rate, self.burst))
            wait = bucket.take()
            if wait > 0:
                seconds = max(1, math.ceil(wait))
                raise ResourceExhausted(
                    f"rate limit of {self.rate:g} requests/s exceeded; retry in {seconds} s",
                    reason="RATE_LIMITED",
                    metadata={"retry_after_seconds": str(seconds)},
                )


def admit_grpc(guard: Guard) -> Callable[[str, Any], None]:
    """The Guard as the runtime's per-call admission check (ServiceSpec.admit)."""

    def admit(method: str, context: Any) -> None:
        if guard.enabled:
            authorization = dict(context.invocation_metadata() or ()).get("authorization")
            guard.check(authorization, method.lstrip("/").replace("/", "."), context.peer())

    return admit
