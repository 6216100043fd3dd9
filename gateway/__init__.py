"""The Strata gateway: the RAG application composed from the four layer services."""
