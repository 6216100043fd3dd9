"""Engines behind the metadata core: `sqlite` (default) and `postgres`."""
