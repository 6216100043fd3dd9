"""Settings of the metadata service, read once from STRATA_METADATA_* variables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.runtime.settings import RuntimeSettings, setting


@dataclass(frozen=True)
class MetadataSettings(RuntimeSettings):
    """Where the metadata service listens, which SQL engine it fronts, and its limits."""

    listen: str = setting("STRATA_METADATA_LISTEN", "127.0.0.1:50053", help="Address the metadata service binds.")
    backend: str = setting(
        "STRATA_METADATA_BACKEND",
        "sqlite",
        choices=("sqlite", "postgres"),
        help="SQL engine: one SQLite file per database, or one PostgreSQL schema per database.",
    )
    postgres_dsn: str = setting(
        "STRATA_METADATA_POSTGRES_DSN",
        "",
        secret=True,
        help="libpq connection string for the postgres backend, e.g. postgresql://user:pw@host:5432/strata.",
    )
    statement_timeout_seconds: float = setting(
        "STRATA_METADATA_STATEMENT_TIMEOUT_SECONDS",
        10.0,
        minimum=0.01,
        maximum=3600,
        help="Time limit of one statement; a statement over it is interrupted (DEADLINE_EXCEEDED).",
    )
    busy_timeout_seconds: float = setting(
        "STRATA_METADATA_BUSY_TIMEOUT_SECONDS",
        5.0,
        minimum=0,
        maximum=600,
        help="How long a write waits for a locked database before it fails with UNAVAILABLE.",
    )
    max_rows: int = setting(
        "STRATA_METADATA_MAX_ROWS",
        100_000,
        minimum=1,
        maximum=10_000_000,
        help="Most rows one statement may return (RESOURCE_EXHAUSTED beyond).",
    )
    max_response_bytes: int = setting(
        "STRATA_METADATA_MAX_RESPONSE_BYTES",
        32 * 1024 * 1024,
        minimum=1024,
        maximum=60 * 1024 * 1024,
        help="Most bytes of values one Query or Batch may return (RESOURCE_EXHAUSTED beyond).",
    )
    max_import_bytes: int = setting(
        "STRATA_METADATA_MAX_IMPORT_BYTES",
        256 * 1024 * 1024,
        minimum=1024,
        maximum=4 * 1024 * 1024 * 1024,
        help="Largest SQL dump Import accepts.",
    )
    sqlite_readers: int = setting(
        "STRATA_METADATA_SQLITE_READERS",
        4,
        minimum=1,
        maximum=64,
        help="Read connections per SQLite database (reads run in parallel; writes go through one writer).",
    )
    sqlite_open_databases: int = setting(
        "STRATA_METADATA_SQLITE_OPEN_DATABASES",
        128,
        minimum=1,
        maximum=100_000,
        help="Most SQLite databases kept open at once; beyond it the least recently used idle one is closed.",
    )
    sqlite_synchronous: str = setting(
        "STRATA_METADATA_SQLITE_SYNCHRONOUS",
        "full",
        choices=("full", "normal"),
        help="SQLite synchronous mode: full survives power loss; normal (WAL) survives process crashes only.",
    )
    postgres_pool_min: int = setting(
        "STRATA_METADATA_POSTGRES_POOL_MIN",
        1,
        minimum=0,
        maximum=1000,
        help="Connections the postgres pool keeps open.",
    )
    postgres_pool_max: int = setting(
        "STRATA_METADATA_POSTGRES_POOL_MAX", 8, minimum=1, maximum=1000, help="Most connections in the postgres pool."
    )

    @property
    def metadata_dir(self) -> Path:
        return self.data_dir / "metadata"
