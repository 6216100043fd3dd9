"""Settings: typed parsing from STRATA_* variables, failures that name the variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.config import GatewaySettings
from services.runtime.settings import ConfigError, RuntimeSettings, load, markdown_table


def test_defaults_without_environment() -> None:
    settings = load(GatewaySettings, {})
    assert settings.listen == "127.0.0.1:50050"
    assert settings.data_dir == Path("data")
    assert settings.shutdown_grace_seconds == 10.0


def test_values_are_parsed_by_type() -> None:
    settings = load(
        GatewaySettings,
        {"STRATA_DATA_DIR": "/tmp/x", "STRATA_SHUTDOWN_GRACE_SECONDS": "2.5", "STRATA_GATEWAY_EMBED_BATCH_SIZE": "8"},
    )
    assert settings.data_dir == Path("/tmp/x")
    assert settings.shutdown_grace_seconds == 2.5
    assert settings.embed_batch_size == 8


def test_settings_are_frozen() -> None:
    settings = load(RuntimeSettings, {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.log_level = "debug"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("STRATA_GATEWAY_EMBED_BATCH_SIZE", "lots", "STRATA_GATEWAY_EMBED_BATCH_SIZE='lots'"),
        ("STRATA_GATEWAY_EMBED_BATCH_SIZE", "0", "from 1 to 1024"),
        ("STRATA_LOG_LEVEL", "loud", "expected one of debug, info, warning, error"),
        ("STRATA_SHUTDOWN_GRACE_SECONDS", "nan", "STRATA_SHUTDOWN_GRACE_SECONDS"),
    ],
)
def test_malformed_value_names_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load(GatewaySettings, {variable: value})


def test_unknown_variable_is_rejected() -> None:
    with pytest.raises(ConfigError, match="STRATA_GATEWAY_LISTNE"):
        load(GatewaySettings, {"STRATA_GATEWAY_LISTNE": "127.0.0.1:1"})


def test_other_services_variables_are_known() -> None:
    # One environment serves all five processes (make run, compose): each must accept the others' settings.
    load(GatewaySettings, {"STRATA_VECTOR_ADDR": "127.0.0.1:1", "STRATA_REQUIRE_BACKENDS": "1"})


def test_configuration_table_lists_every_variable() -> None:
    table = markdown_table()
    for name in ("STRATA_DATA_DIR", "STRATA_GATEWAY_LISTEN", "STRATA_VECTOR_ADDR", "STRATA_LOG_LEVEL"):
        assert f"`{name}`" in table


def test_readme_configuration_table_is_current() -> None:
    from services.runtime.settings import readme_with_table

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert readme == readme_with_table(readme), "run: python -m services.runtime.settings --write-readme"
