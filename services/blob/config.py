"""Blob service settings, read once from STRATA_BLOB_* variables."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import RuntimeSettings, setting


@dataclass(frozen=True)
class BlobSettings(RuntimeSettings):
    listen: str = setting("STRATA_BLOB_LISTEN", "127.0.0.1:50054", help="Address the blob service listens on.")
    backend: str = setting(
        "STRATA_BLOB_BACKEND",
        "fs",
        choices=("fs", "s3"),
        help="Object store: files under STRATA_DATA_DIR/blob, or an S3-compatible service.",
    )
    chunk_bytes: int = setting(
        "STRATA_BLOB_CHUNK_BYTES",
        1024 * 1024,
        minimum=4096,
        maximum=16 * 1024 * 1024,
        help="Size of the content chunks GetObject streams, and of the writes buffered from PutObject.",
    )
    s3_endpoint: str = setting(
        "STRATA_BLOB_S3_ENDPOINT",
        "",
        help="S3 endpoint URL (e.g. http://127.0.0.1:8333 or an R2 account URL); empty means AWS.",
    )
    s3_region: str = setting("STRATA_BLOB_S3_REGION", "us-east-1", help="S3 region (R2 uses 'auto').")
    s3_access_key_id: str = setting(
        "STRATA_BLOB_S3_ACCESS_KEY_ID", "", help="S3 access key id; empty uses boto3's default credential chain."
    )
    s3_secret_access_key: str = setting(
        "STRATA_BLOB_S3_SECRET_ACCESS_KEY", "", secret=True, help="S3 secret access key."
    )
    s3_bucket_prefix: str = setting(
        "STRATA_BLOB_S3_BUCKET_PREFIX",
        "",
        help="Prefix of the S3 bucket behind each Strata bucket, so Strata's buckets can share one account.",
    )
    s3_part_bytes: int = setting(
        "STRATA_BLOB_S3_PART_BYTES",
        8 * 1024 * 1024,
        minimum=5 * 1024 * 1024,
        maximum=512 * 1024 * 1024,
        help="PutObject streams larger than this go to S3 as a multipart upload of parts this size (bounded memory).",
    )
