"""Settings from `STRATA_*` environment variables into frozen dataclasses.

Each service declares its settings as a frozen dataclass whose fields are made
with `setting(...)`; `load(cls)` reads them once at start. A malformed value, or a
`STRATA_*` variable that no service declares (a typo), raises `ConfigError`
naming the variable, and the server exits before binding a port.

    @dataclass(frozen=True)
    class VectorSettings(RuntimeSettings):
        backend: str = setting("STRATA_VECTOR_BACKEND", "faiss", choices=("faiss", "milvus"),
                               help="Vector engine.")
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

PREFIX = "STRATA_"

# Modules whose dataclasses together declare every STRATA_* variable.
SETTINGS_MODULES = (
    "services.runtime.settings",
    "services.inference.config",
    "services.vector.config",
    "services.metadata.config",
    "services.blob.config",
    "gateway.config",
)

# Read by the test suite and benchmarks, not by servers.
TOOLING_VARIABLES = frozenset(
    {
        "STRATA_REQUIRE_BACKENDS",  # tests: fail instead of skip when a backend server is missing
        "STRATA_BENCH_QUICK",  # benchmarks: small sizes
        "STRATA_CONFORMANCE_ADDR",  # make conformance: the server under test
        "STRATA_READY_TIMEOUT_SECONDS",  # make run: how long to wait for SERVING
        "STRATA_GATEWAY_ADDR",  # the strata CLI: gateway to talk to
        "STRATA_API_KEY",  # the strata CLI: key it sends
    }
)


class ConfigError(ValueError):
    """A setting is missing, malformed or unknown; the message names the variable."""


def setting(
    env: str,
    default: Any,
    *,
    help: str,
    choices: tuple[str, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    secret: bool = False,
) -> Any:
    """Declare a dataclass field read from the environment variable `env`."""
    if not env.startswith(PREFIX):
        raise ValueError(f"setting {env} must start with {PREFIX}")
    meta = {"env": env, "help": help, "choices": choices, "minimum": minimum, "maximum": maximum, "secret": secret}
    if isinstance(default, (list, dict, set)):
        raise TypeError("use tuples for sequence defaults; settings are frozen")
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """What every server reads: logging, shutdown and where data lives."""

    data_dir: Path = setting(
        "STRATA_DATA_DIR", Path("data"), help="Root folder for all local data; each service uses a subfolder."
    )
    log_level: str = setting(
        "STRATA_LOG_LEVEL", "info", choices=("debug", "info", "warning", "error"), help="Log level."
    )
    log_format: str = setting(
        "STRATA_LOG_FORMAT", "json", choices=("json", "text"), help="One JSON object per line, or plain text."
    )
    shutdown_grace_seconds: float = setting(
        "STRATA_SHUTDOWN_GRACE_SECONDS",
        10.0,
        minimum=0,
        maximum=600,
        help="On SIGTERM/SIGINT, how long in-flight calls may finish before they are cancelled.",
    )
    tls_cert_file: str = setting(
        "STRATA_TLS_CERT_FILE", "", help="PEM certificate chain; with STRATA_TLS_KEY_FILE every gRPC server serves TLS."
    )
    tls_key_file: str = setting("STRATA_TLS_KEY_FILE", "", help="PEM private key of STRATA_TLS_CERT_FILE.")
    tls_ca_file: str = setting(
        "STRATA_TLS_CA_FILE",
        "",
        help="PEM CA bundle the gateway trusts when dialing layers; set it to dial them over TLS.",
    )
    health_probe_seconds: float = setting(
        "STRATA_HEALTH_PROBE_SECONDS",
        5.0,
        minimum=0.1,
        maximum=3600,
        help="How often a server re-checks its backend for the health service.",
    )
    allocator_keep_mib: int = setting(
        "STRATA_ALLOCATOR_KEEP_MIB",
        64,
        minimum=0,
        maximum=65536,
        help="Freed memory (MiB) each server keeps for reuse instead of returning it to the OS at once (glibc); "
        "large messages then cost no fresh page faults. 0 keeps the C library's defaults.",
    )
    metrics_port_offset: int = setting(
        "STRATA_METRICS_PORT_OFFSET",
        1000,
        minimum=0,
        maximum=65535,
        help="Prometheus /metrics is served on the gRPC port plus this, on the same host (gRPC port 0: any free "
        "port); 0 turns metrics off. Tracing is set with the standard OTEL_* variables.",
    )

    def huge_pages(self) -> bool:
        """Whether this server's large blocks should be on transparent huge pages (see
        `memory.restart_with_huge_pages`); a service that keeps large arrays says yes."""
        return False


T = TypeVar("T")


def _parse(name: str, raw: str, kind: Any, meta: Mapping[str, Any]) -> Any:
    text = raw.strip()
    value: Any
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind is int:
            value = int(text)
        elif kind is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError("expected a finite number")
        elif kind is Path:
            if not text:
                raise ValueError("expected a path")
            value = Path(text)
        elif kind is str:
            value = text
        elif typing.get_origin(kind) is tuple:
            value = tuple(part.strip() for part in text.split(",") if part.strip())
        else:
            raise TypeError(f"unsupported setting type {kind!r}")
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{name}={raw!r}: expected one of {', '.join(choices)}")
    low, high = meta.get("minimum"), meta.get("maximum")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name}={raw!r}: expected a value from {low} to {high}")
    return value


def load(cls: type[T], environ: Mapping[str, str] | None = None) -> T:
    """Build `cls` from the environment, failing on malformed or unknown STRATA_* variables."""
    environ = os.environ if environ is None else environ
    check_unknown(environ)
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = field.metadata.get("env")
        if env and env in environ:
            values[field.name] = _parse(env, environ[env], hints[field.name], field.metadata)
    return cls(**values)


def declared_settings() -> dict[str, tuple[type, dataclasses.Field[Any]]]:
    """Every declared variable name, with the dataclass and field that read it."""
    found: dict[str, tuple[type, dataclasses.Field[Any]]] = {}
    for module_name in SETTINGS_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                for field in dataclasses.fields(obj):
                    env = field.metadata.get("env")
                    if env:
                        found.setdefault(env, (obj, field))
    return found


def check_unknown(environ: Mapping[str, str]) -> None:
    """Raise ConfigError for a STRATA_* variable that nothing reads (most often a typo)."""
    known = declared_settings().keys() | TOOLING_VARIABLES
    unknown = sorted(name for name in environ if name.startswith(PREFIX) and name not in known)
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)}: see the configuration table in README.md")


def markdown_table() -> str:
    """The configuration table for README.md, from the declarations."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for env, (_cls, field) in sorted(declared_settings().items()):
        default = field.default
        shown: Any = default
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, tuple):
            shown = ",".join(default)
        choices = field.metadata.get("choices")
        meaning = field.metadata["help"] + (f" One of: {', '.join(choices)}." if choices else "")
        rows.append(f"| `{env}` | `{shown}` | {meaning} |")
    return "\n".join(rows)


README_BEGIN, README_END = "<!-- settings:begin -->", "<!-- settings:end -->"


def readme_with_table(readme: str) -> str:
    """README text with the configuration table between its markers replaced by the current one."""
    head, _, rest = readme.partition(README_BEGIN)
    _, _, tail = rest.partition(README_END)
    return f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{tail}"


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--write-readme"]:
        path = Path(__file__).resolve().parents[2] / "README.md"
        path.write_text(readme_with_table(path.read_text()))
    else:
        print(markdown_table())
