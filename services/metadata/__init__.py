"""The metadata layer: D1-style SQL databases behind strata.metadata.v1.MetadataService."""
