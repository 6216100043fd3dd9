"""Blob storage backends behind one Protocol (`base.BlobBackend`)."""
