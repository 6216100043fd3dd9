"""API key parsing, hashing, exposure rules and the token bucket."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gateway.auth import Guard, TokenBucket, is_loopback, parse_keys
from gateway.config import GatewaySettings
from services.runtime.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from services.runtime.settings import ConfigError


def test_keys_from_variable_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    digest = hashlib.sha256(b"from-file").hexdigest()
    keys_file.write_text(f"# comment\nplain-key\nsha256:{digest} read-only\n")
    keys = parse_keys(GatewaySettings(api_keys="a,b:ro", api_keys_file=str(keys_file)))
    assert [k.read_only for k in keys] == [False, True, False, True]
    assert all(len(k.digest) == 32 for k in keys)  # only digests are kept
    guard = Guard(GatewaySettings(api_keys_file=str(keys_file)))
    guard.check("Bearer from-file", "strata.gateway.v1.GatewayService.Search", "c")
    with pytest.raises(PermissionDenied):
        guard.check("Bearer from-file", "strata.gateway.v1.GatewayService.PutDocument", "c")
    with pytest.raises(Unauthenticated):
        guard.check("Bearer wrong", "strata.gateway.v1.GatewayService.Search", "c")
    with pytest.raises(Unauthenticated):
        guard.check(None, "strata.gateway.v1.GatewayService.Search", "c")


@pytest.mark.parametrize("line", ["key something-else", "sha256:xyz", "a b c"])
def test_malformed_keys_file_names_the_line(tmp_path: Path, line: str) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(line + "\n")
    with pytest.raises(ConfigError, match=r"STRATA_API_KEYS_FILE=.*:1"):
        parse_keys(GatewaySettings(api_keys_file=str(keys_file)))


def test_public_bind_without_keys_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"STRATA_GATEWAY_LISTEN=0\.0\.0\.0:50050"):
        Guard(GatewaySettings(listen="0.0.0.0:50050"))
    with pytest.raises(ConfigError, match="STRATA_GATEWAY_REST_LISTEN"):
        Guard(GatewaySettings(rest_listen="[::]:8080"))
    Guard(GatewaySettings(listen="0.0.0.0:50050", rest_listen="0.0.0.0:8080", api_keys="k"))


def test_loopback_detection() -> None:
    assert is_loopback("127.0.0.1:1") and is_loopback("[::1]:1") and is_loopback("localhost:1")
    assert not is_loopback("0.0.0.0:1") and not is_loopback("10.0.0.1:1")


def test_token_bucket_refuses_past_burst() -> None:
    bucket = TokenBucket(rate=1.0, burst=2)
    assert bucket.take() == 0 and bucket.take() == 0
    assert 0 < bucket.take() <= 1.0
    guard = Guard(GatewaySettings(rate_limit_per_second=1.0, rate_limit_burst=1))
    guard.check(None, "m", "client-a")
    with pytest.raises(ResourceExhausted) as caught:
        guard.check(None, "m", "client-a")
    assert caught.value.metadata["retry_after_seconds"] == "1"
    guard.check(None, "m", "client-b")  # limits are per client
