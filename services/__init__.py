"""The four Strata layer services (inference, vector, metadata, blob) and their shared runtime."""
