"""Vector settings come from STRATA_VECTOR_* variables; bad values fail naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.settings import ConfigError, load
from services.vector.config import VectorSettings


def test_defaults() -> None:
    settings = load(VectorSettings, {})
    assert (settings.listen, settings.backend, settings.data_dir) == ("127.0.0.1:50052", "faiss", Path("data"))
    assert settings.milvus_uri == "http://127.0.0.1:19530" and settings.milvus_token == ""


def test_overrides() -> None:
    settings = load(
        VectorSettings,
        {
            "STRATA_VECTOR_BACKEND": "milvus",
            "STRATA_VECTOR_MILVUS_URI": "http://milvus:19530",
            "STRATA_VECTOR_MILVUS_TOKEN": "root:Milvus",
            "STRATA_VECTOR_SNAPSHOT_INTERVAL_SECONDS": "2.5",
            "STRATA_VECTOR_WAL_MAX_ENTRIES": "10",
            "STRATA_VECTOR_QUERY_BATCH_WINDOW_MS": "0.5",
        },
    )
    assert settings.backend == "milvus" and settings.milvus_token == "root:Milvus"
    assert (settings.snapshot_interval_seconds, settings.wal_max_entries, settings.query_batch_window_ms) == (
        2.5,
        10,
        0.5,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRATA_VECTOR_BACKEND", "qdrant"),
        ("STRATA_VECTOR_WAL_MAX_BYTES", "lots"),
        ("STRATA_VECTOR_QUERY_BATCH_MAX", "0"),
        ("STRATA_VECTOR_HNSW_M", "65"),
        ("STRATA_VECTOR_SNAPSHOT_INTERVALS", "1"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(VectorSettings, {name: value})


def test_the_token_is_secret() -> None:
    field = VectorSettings.__dataclass_fields__["milvus_token"]
    assert field.metadata["secret"] is True
