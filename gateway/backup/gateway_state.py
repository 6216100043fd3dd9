"""What the gateway's catalog (in a metadata dump) says must be in the vector and blob copies.

A READY document at generation g had its vectors and its blob object written before the
row committed, so the dump alone says which (document, generation) pairs a consistent
backup must carry, and which other generations' vectors and bytes it may leave out.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import naming
from gateway.backup.layers import Layers
from gateway.backup.metadata import paged_query, query

CATALOG_TABLES = ("collections", "documents", "chunks")
_CREATE_TABLE = re.compile(r'\s*CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?"?(?P<table>\w+)"?\s*\(', re.IGNORECASE)
_BLOB_KEY = re.compile(r"^(?P<collection>[^/]+)/(?P<doc>[0-9a-f]{32})/(?P<generation>[0-9]+)$")


@dataclass(frozen=True)
class ReadyDocument:
    collection: str
    id: str
    generation: int
    chunk_count: int


@dataclass
class GatewayState:
    """Collections, documents and chunks as of the dump."""

    database: str
    bucket: str
    collections: dict[str, str] = field(default_factory=dict)  # name -> state
    # collection -> {(document key, generation)} of every document row's current generation
    referenced: dict[str, set[tuple[str, int]]] = field(default_factory=lambda: defaultdict(set))
    ready: list[ReadyDocument] = field(default_factory=list)
    # (collection, document id) -> vector ids of its READY generation's chunks
    chunk_vectors: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))
    table_rows: dict[str, int] = field(default_factory=dict)

    @property
    def index_names(self) -> dict[str, str]:
        """Vector index name -> collection."""
        return {naming.index_name(c): c for c in self.collections}

    def keeps_vector(self, collection: str, metadata: dict[str, Any]) -> bool:
        doc, generation = metadata.get(naming.DOC_KEY), metadata.get(naming.GENERATION_KEY)
        if not isinstance(doc, str) or not isinstance(generation, int | float):
            return True  # not one of the gateway's chunk vectors: keep it as it is
        return (doc, int(generation)) in self.referenced[collection]

    def keeps_object(self, bucket: str, key: str) -> bool:
        if bucket != self.bucket:
            return True
        match = _BLOB_KEY.match(key)
        if match is None or match["collection"] not in self.collections:
            return True
        return (match["doc"], int(match["generation"])) in self.referenced[match["collection"]]

    def summary(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "bucket": self.bucket,
            "collections": len(self.collections),
            "ready_documents": len(self.ready),
            "ready_chunks": sum(d.chunk_count for d in self.ready),
            "table_rows": self.table_rows,
        }


def mentions_catalog(dump: Path) -> bool:
    """Whether a dump creates the gateway's three tables (a database of that name could hold anything)."""
    wanted = set(CATALOG_TABLES)
    with dump.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            match = _CREATE_TABLE.match(line)
            if match:
                wanted.discard(match["table"].lower())
    return not wanted


def table_rows(layers: Layers, database: str) -> dict[str, int]:
    return {
        table: int(query(layers, database, f"SELECT COUNT(*) AS n FROM {table}")[0]["n"]) for table in CATALOG_TABLES
    }


def read_state(layers: Layers, database: str, real_name: str, bucket: str) -> GatewayState:
    """Read the catalog from `database` (a scratch copy of the dump of `real_name`)."""
    state = GatewayState(database=real_name, bucket=bucket)
    state.table_rows = table_rows(layers, database)
    for row in query(layers, database, "SELECT name, state FROM collections"):
        state.collections[row["name"]] = row["state"]
    documents = paged_query(
        layers,
        database,
        "SELECT collection, id, status, generation, chunk_count FROM documents",
        ("collection", "id"),
    )
    for row in documents:
        if row["generation"]:
            state.referenced[row["collection"]].add((naming.document_key(row["id"]), int(row["generation"])))
        if row["status"] == "ready" and state.collections.get(row["collection"]) == "ready":
            state.ready.append(
                ReadyDocument(row["collection"], row["id"], int(row["generation"]), int(row["chunk_count"]))
            )
    chunks = paged_query(
        layers,
        database,
        "SELECT c.collection AS collection, c.vector_id AS vector_id, c.document_id AS document_id"
        " FROM chunks c JOIN documents d"
        "  ON d.collection = c.collection AND d.id = c.document_id AND d.generation = c.generation"
        " WHERE d.status = 'ready'",
        ("collection", "vector_id"),
    )
    for row in chunks:
        state.chunk_vectors[(row["collection"], row["document_id"])].append(row["vector_id"])
    return state


def missing_items(state: GatewayState, vector_ids: dict[str, set[str]], object_keys: dict[str, set[str]]) -> list[str]:
    """What READY documents in the dump lack in the copies: chunk vectors or the blob object."""
    missing: list[str] = []
    for doc in state.ready:
        index = naming.index_name(doc.collection)
        expected = state.chunk_vectors.get((doc.collection, doc.id), [])
        if len(expected) != doc.chunk_count:
            missing.append(
                f"document {doc.id!r} in {doc.collection!r}: {len(expected)} chunk rows for chunk_count"
                f" {doc.chunk_count}"
            )
        absent = [v for v in expected if v not in vector_ids.get(index, set())]
        if absent:
            missing.append(
                f"document {doc.id!r} in {doc.collection!r} generation {doc.generation}:"
                f" {len(absent)} of {len(expected)} chunk vectors not in index {index!r}"
            )
        key = naming.blob_key(doc.collection, doc.id, doc.generation)
        if key not in object_keys.get(state.bucket, set()):
            missing.append(
                f"document {doc.id!r} in {doc.collection!r} generation {doc.generation}:"
                f" object {key!r} not in bucket {state.bucket!r}"
            )
    return missing
