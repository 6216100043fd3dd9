"""Settings of the vector service, read once from STRATA_VECTOR_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import RuntimeSettings, setting


@dataclass(frozen=True)
class VectorSettings(RuntimeSettings):
    """Where the vector service listens, which engine it fronts and how the local engine persists."""

    listen: str = setting("STRATA_VECTOR_LISTEN", "127.0.0.1:50052", help="Address the vector service binds.")
    backend: str = setting(
        "STRATA_VECTOR_BACKEND",
        "faiss",
        choices=("faiss", "milvus"),
        help="Vector engine: in-process FAISS with a local log and snapshots, or a Milvus server.",
    )
    milvus_uri: str = setting(
        "STRATA_VECTOR_MILVUS_URI", "http://127.0.0.1:19530", help="Milvus server address, for the milvus backend."
    )
    milvus_token: str = setting(
        "STRATA_VECTOR_MILVUS_TOKEN", "", secret=True, help="Milvus token ('user:password' or an API key); optional."
    )
    milvus_timeout_seconds: float = setting(
        "STRATA_VECTOR_MILVUS_TIMEOUT_SECONDS", 30.0, minimum=0.1, maximum=600, help="Timeout of each Milvus call."
    )
    snapshot_interval_seconds: float = setting(
        "STRATA_VECTOR_SNAPSHOT_INTERVAL_SECONDS",
        300.0,
        minimum=0.1,
        maximum=86400,
        help="FAISS: how long a non-empty write-ahead log may wait before a snapshot truncates it.",
    )
    wal_max_bytes: int = setting(
        "STRATA_VECTOR_WAL_MAX_BYTES",
        256 * 1024 * 1024,
        minimum=1,
        help="FAISS: snapshot an index as soon as its write-ahead log grows past this many bytes.",
    )
    wal_max_entries: int = setting(
        "STRATA_VECTOR_WAL_MAX_ENTRIES",
        50_000,
        minimum=1,
        help="FAISS: snapshot an index as soon as its write-ahead log holds this many mutations.",
    )
    huge_pages_on: bool = setting(
        "STRATA_VECTOR_HUGE_PAGES",
        True,
        help="FAISS: back the index's storage with transparent huge pages (Linux, glibc 2.35+, THP mode "
        "'madvise'; the process re-executes itself once with GLIBC_TUNABLES set). Adds run several times "
        "faster where fresh pages are slow to fault in.",
    )
    query_batch_window_ms: float = setting(
        "STRATA_VECTOR_QUERY_BATCH_WINDOW_MS",
        0.0,
        minimum=0,
        maximum=100,
        help="FAISS: extra time a query waits for others to share one search call; 0 batches only "
        "the queries that arrive while a search is running.",
    )
    query_batch_max: int = setting(
        "STRATA_VECTOR_QUERY_BATCH_MAX", 64, minimum=1, maximum=4096, help="FAISS: most queries in one search call."
    )
    hnsw_m: int = setting("STRATA_VECTOR_HNSW_M", 32, minimum=4, maximum=64, help="Default HNSW graph degree (M).")
    hnsw_ef_construction: int = setting(
        "STRATA_VECTOR_HNSW_EF_CONSTRUCTION", 80, minimum=8, maximum=1024, help="Default HNSW build candidate list."
    )
    hnsw_ef_search: int = setting(
        "STRATA_VECTOR_HNSW_EF_SEARCH", 128, minimum=8, maximum=1024, help="Default HNSW search candidate list."
    )

    def huge_pages(self) -> bool:
        return self.huge_pages_on and self.backend == "faiss"
