"""Gateway settings: where the four layers are, and the application's limits and defaults."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import RuntimeSettings, setting


@dataclass(frozen=True)
class GatewaySettings(RuntimeSettings):
    listen: str = setting("STRATA_GATEWAY_LISTEN", "127.0.0.1:50050", help="Gateway gRPC bind address.")
    rest_listen: str = setting(
        "STRATA_GATEWAY_REST_LISTEN", "127.0.0.1:8080", help="Gateway REST bind address; empty disables REST."
    )
    inference_addr: str = setting(
        "STRATA_INFERENCE_ADDR", "127.0.0.1:50051", help="Inference service the gateway dials."
    )
    vector_addr: str = setting("STRATA_VECTOR_ADDR", "127.0.0.1:50052", help="Vector service the gateway dials.")
    metadata_addr: str = setting("STRATA_METADATA_ADDR", "127.0.0.1:50053", help="Metadata service the gateway dials.")
    blob_addr: str = setting("STRATA_BLOB_ADDR", "127.0.0.1:50054", help="Blob service the gateway dials.")
    database: str = setting(
        "STRATA_GATEWAY_DATABASE", "strata_gateway", help="Metadata database holding collections, documents and chunks."
    )
    bucket: str = setting(
        "STRATA_GATEWAY_BUCKET", "strata-documents", help="Blob bucket holding documents' original bytes."
    )
    upstream_timeout_seconds: float = setting(
        "STRATA_GATEWAY_UPSTREAM_TIMEOUT_SECONDS",
        30.0,
        minimum=0.1,
        maximum=3600,
        help="Deadline of one call to a layer, shortened to the client's own deadline when that is sooner.",
    )
    generation_timeout_seconds: float = setting(
        "STRATA_GATEWAY_GENERATION_TIMEOUT_SECONDS",
        300.0,
        minimum=1,
        maximum=3600,
        help="Deadline of one answer generation.",
    )
    upstream_concurrency: int = setting(
        "STRATA_GATEWAY_UPSTREAM_CONCURRENCY",
        64,
        minimum=1,
        maximum=10000,
        help="Most calls in flight to each layer at once; more wait their turn.",
    )
    max_document_bytes: int = setting(
        "STRATA_GATEWAY_MAX_DOCUMENT_BYTES",
        32 * 1024 * 1024,
        minimum=1,
        maximum=1 << 34,
        help="Largest document PutDocument accepts (RESOURCE_EXHAUSTED beyond).",
    )
    embed_batch_size: int = setting(
        "STRATA_GATEWAY_EMBED_BATCH_SIZE", 32, minimum=1, maximum=1024, help="Chunks per Embed call during ingest."
    )
    embed_parallelism: int = setting(
        "STRATA_GATEWAY_EMBED_PARALLELISM",
        2,
        minimum=1,
        maximum=64,
        help="Embed calls one ingest keeps in flight (lets the inference service batch across them).",
    )
    min_score: float = setting(
        "STRATA_GATEWAY_MIN_SCORE",
        0.25,
        minimum=-1,
        maximum=1,
        help="Ask ignores chunks whose cosine similarity is below this; none left means 'not found'.",
    )
    answer_max_tokens: int = setting(
        "STRATA_GATEWAY_ANSWER_MAX_TOKENS", 256, minimum=1, maximum=8192, help="Default most tokens of an answer."
    )
    context_tokens: int = setting(
        "STRATA_GATEWAY_CONTEXT_TOKENS",
        2048,
        minimum=256,
        maximum=1 << 20,
        help="Context window of the generation model; prompts are cut to fit it with the answer.",
    )
    generation_model: str = setting(
        "STRATA_GATEWAY_GENERATION_MODEL", "", help="Model for Ask; empty uses the inference service's default."
    )
    api_keys: str = setting(
        "STRATA_API_KEYS",
        "",
        secret=True,
        help="Comma-separated API keys clients send as `Authorization: Bearer KEY`; append `:ro` for a read-only key. "
        "Empty (and no keys file) means no authentication, and then the gateway only binds loopback addresses.",
    )
    api_keys_file: str = setting(
        "STRATA_API_KEYS_FILE",
        "",
        help="File of API keys, one per line: the key or `sha256:HEX` of it, optionally followed by `read-only`.",
    )
    rate_limit_per_second: float = setting(
        "STRATA_GATEWAY_RATE_LIMIT_PER_SECOND",
        0.0,
        minimum=0,
        maximum=1e6,
        help="Requests per second each API key (or, without keys, each client) may make; 0 turns limits off.",
    )
    rate_limit_burst: int = setting(
        "STRATA_GATEWAY_RATE_LIMIT_BURST", 20, minimum=1, maximum=1_000_000, help="Requests a key may make at once."
    )
    rest_max_body_bytes: int = setting(
        "STRATA_GATEWAY_REST_MAX_BODY_BYTES",
        48 * 1024 * 1024,
        minimum=1024,
        maximum=1 << 34,
        help="Largest REST request body (a document travels base64-encoded, a third larger).",
    )
    janitor_seconds: float = setting(
        "STRATA_GATEWAY_JANITOR_SECONDS",
        30.0,
        minimum=0.05,
        maximum=86400,
        help="How often the gateway finishes cleanups (of failed ingests, deleted collections) a layer outage left.",
    )
