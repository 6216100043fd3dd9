"""Metadata settings come from STRATA_METADATA_* variables, validated at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.metadata.config import MetadataSettings
from services.runtime.settings import ConfigError, load


def test_defaults() -> None:
    settings = load(MetadataSettings, {})
    assert settings.listen == "127.0.0.1:50053"
    assert settings.backend == "sqlite"
    assert settings.metadata_dir == Path("data") / "metadata"


def test_environment_overrides() -> None:
    settings = load(
        MetadataSettings,
        {
            "STRATA_METADATA_BACKEND": "postgres",
            "STRATA_METADATA_POSTGRES_DSN": "postgresql://u@h/db",
            "STRATA_METADATA_STATEMENT_TIMEOUT_SECONDS": "2.5",
            "STRATA_METADATA_MAX_ROWS": "10",
            "STRATA_METADATA_SQLITE_READERS": "2",
            "STRATA_DATA_DIR": "/srv/strata",
        },
    )
    assert (settings.backend, settings.postgres_dsn, settings.max_rows) == ("postgres", "postgresql://u@h/db", 10)
    assert settings.statement_timeout_seconds == 2.5
    assert settings.metadata_dir == Path("/srv/strata/metadata")


@pytest.mark.parametrize(
    "environ",
    [
        {"STRATA_METADATA_BACKEND": "mysql"},
        {"STRATA_METADATA_MAX_ROWS": "0"},
        {"STRATA_METADATA_STATEMENT_TIMEOUT_SECONDS": "soon"},
        {"STRATA_METADATA_SQLITE_SYNCHRONOUS": "off"},
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(environ))):
        load(MetadataSettings, environ)
