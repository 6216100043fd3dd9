"""The blob service: S3/R2-style buckets and objects on local disk or any S3-compatible store."""
