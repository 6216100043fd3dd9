"""The gateway's own records, kept in the metadata service: collections, documents, chunks.

Only portable SQL (SQLite and PostgreSQL) with `?` parameters. A document's
chunks are tied to a generation: ingest writes a new generation's vectors and
chunk rows, then one transaction points the document at it, so search (which
joins on the document's current generation) sees the old version or the new,
never a mix.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from gateway.sql import Sql, SqlValue, Statement

SCHEMA: list[Statement] = [
    (
        "CREATE TABLE IF NOT EXISTS collections ("
        " name TEXT PRIMARY KEY,"
        " description TEXT NOT NULL,"
        " embedding_model TEXT NOT NULL,"
        " dimensions INTEGER NOT NULL,"
        " chunk_size INTEGER NOT NULL,"
        " chunk_overlap INTEGER NOT NULL,"
        " state TEXT NOT NULL,"
        " create_time_us BIGINT NOT NULL)",
        (),
    ),
    (
        "CREATE TABLE IF NOT EXISTS documents ("
        " collection TEXT NOT NULL,"
        " id TEXT NOT NULL,"
        " status TEXT NOT NULL,"
        " error TEXT NOT NULL,"
        " content_type TEXT NOT NULL,"
        " size_bytes BIGINT NOT NULL,"
        " etag TEXT NOT NULL,"
        " metadata TEXT NOT NULL,"
        " generation BIGINT NOT NULL,"
        " pending_generation BIGINT NOT NULL,"
        " stale_generations INTEGER NOT NULL DEFAULT 0,"
        " chunk_count INTEGER NOT NULL,"
        " create_time_us BIGINT NOT NULL,"
        " update_time_us BIGINT NOT NULL,"
        " PRIMARY KEY (collection, id))",
        (),
    ),
    (
        "CREATE TABLE IF NOT EXISTS chunks ("
        " collection TEXT NOT NULL,"
        " vector_id TEXT NOT NULL,"
        " document_id TEXT NOT NULL,"
        " generation BIGINT NOT NULL,"
        " chunk_index INTEGER NOT NULL,"
        " text TEXT NOT NULL,"
        " PRIMARY KEY (collection, vector_id))",
        (),
    ),
    ("CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (collection, document_id, generation)", ()),
    ("CREATE INDEX IF NOT EXISTS documents_by_status ON documents (collection, status, id)", ()),
]

PENDING, READY, FAILED = "pending", "ready", "failed"


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Version:
    """What describes one version of a document's content."""

    content_type: str
    size: int
    etag: str
    metadata: dict[str, Any]

    @property
    def metadata_json(self) -> str:
        return json.dumps(self.metadata, sort_keys=True)


@dataclass(frozen=True)
class CollectionRecord:
    name: str
    description: str
    embedding_model: str
    dimensions: int
    chunk_size: int
    chunk_overlap: int
    state: str
    create_time_us: int
    document_count: int = 0
    chunk_count: int = 0


@dataclass(frozen=True)
class DocumentRecord:
    collection: str
    id: str
    status: str
    error: str
    content_type: str
    size_bytes: int
    etag: str
    metadata: dict[str, Any]
    generation: int
    pending_generation: int
    chunk_count: int
    create_time_us: int
    update_time_us: int
    # 1 while vectors or bytes of older generations may remain (invisible; the janitor drops them).
    stale_generations: int = 0


def _collection(row: dict[str, Any]) -> CollectionRecord:
    return CollectionRecord(**{k: row[k] for k in CollectionRecord.__dataclass_fields__ if k in row})


def _document(row: dict[str, Any]) -> DocumentRecord:
    values = dict(row)
    values["metadata"] = json.loads(values["metadata"] or "{}")
    return DocumentRecord(**{k: values[k] for k in DocumentRecord.__dataclass_fields__})


_DOC_COLUMNS = ", ".join(DocumentRecord.__dataclass_fields__)


class Catalog:
    """Typed access to the gateway's tables."""

    def __init__(self, sql: Sql) -> None:
        self.sql = sql

    async def ensure_schema(self) -> None:
        await self.sql.batch(SCHEMA)

    # -- collections -------------------------------------------------------------------------

    async def insert_collection(self, record: CollectionRecord) -> None:
        await self.sql.query(
            "INSERT INTO collections (name, description, embedding_model, dimensions, chunk_size, chunk_overlap,"
            " state, create_time_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                record.name,
                record.description,
                record.embedding_model,
                record.dimensions,
                record.chunk_size,
                record.chunk_overlap,
                record.state,
                record.create_time_us,
            ),
        )

    async def set_collection_state(self, name: str, state: str) -> None:
        await self.sql.query("UPDATE collections SET state = ? WHERE name = ?", (state, name))

    async def get_collection(self, name: str, *, with_counts: bool = False) -> CollectionRecord | None:
        rows = await self.sql.query("SELECT * FROM collections WHERE name = ?", (name,), read_only=True)
        if not rows:
            return None
        record = _collection(rows[0])
        if with_counts:
            counts = await self.sql.query(
                "SELECT COUNT(*) AS documents,"
                " COALESCE(SUM(CASE WHEN status = 'ready' THEN chunk_count ELSE 0 END), 0) AS chunks"
                " FROM documents WHERE collection = ?",
                (name,),
                read_only=True,
            )
            record = CollectionRecord(
                **{**record.__dict__, "document_count": counts[0]["documents"], "chunk_count": counts[0]["chunks"]}
            )
        return record

    async def list_collections(self, after: str, limit: int) -> list[CollectionRecord]:
        rows = await self.sql.query(
            "SELECT c.*,"
            " (SELECT COUNT(*) FROM documents d WHERE d.collection = c.name) AS document_count,"
            " (SELECT COALESCE(SUM(d.chunk_count), 0) FROM documents d"
            "   WHERE d.collection = c.name AND d.status = 'ready') AS chunk_count"
            " FROM collections c WHERE c.name > ? AND c.state = 'ready' ORDER BY c.name LIMIT ?",
            (after, limit),
            read_only=True,
        )
        return [_collection(r) for r in rows]

    async def collections_in_state(self, state: str) -> list[str]:
        rows = await self.sql.query("SELECT name FROM collections WHERE state = ?", (state,), read_only=True)
        return [r["name"] for r in rows]

    async def delete_collection_rows(self, name: str) -> None:
        await self.sql.batch(
            [
                ("DELETE FROM chunks WHERE collection = ?", (name,)),
                ("DELETE FROM documents WHERE collection = ?", (name,)),
                ("DELETE FROM collections WHERE name = ?", (name,)),
            ]
        )

    # -- documents ---------------------------------------------------------------------------

    async def get_document(self, collection: str, document_id: str) -> DocumentRecord | None:
        rows = await self.sql.query(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE collection = ? AND id = ?",
            (collection, document_id),
            read_only=True,
        )
        return _document(rows[0]) if rows else None

    async def list_documents(self, collection: str, after: str, limit: int, status: str | None) -> list[DocumentRecord]:
        params: list[SqlValue] = [collection, after]
        where = "collection = ? AND id > ?"
        if status:
            where += " AND status = ?"
            params.append(status)
        params.append(limit)
        rows = await self.sql.query(
            f"SELECT {_DOC_COLUMNS} FROM documents WHERE {where} ORDER BY id LIMIT ?", params, read_only=True
        )
        return [_document(r) for r in rows]

    async def pending_documents(self) -> list[DocumentRecord]:
        rows = await self.sql.query(
            f"SELECT {_DOC_COLUMNS} FROM documents"
            " WHERE status = ? OR pending_generation <> 0 OR stale_generations <> 0",
            (PENDING,),
            read_only=True,
        )
        return [_document(r) for r in rows]

    async def begin_ingest(
        self,
        existing: DocumentRecord | None,
        collection: str,
        document_id: str,
        generation: int,
        version: Version,
    ) -> None:
        """Record that `generation` is being ingested.

        A document with a visible (READY) version keeps it, unchanged, until `commit_ingest`;
        one without becomes PENDING with the new version's description.
        """
        stamp = now_us()
        if existing is None:
            await self.sql.query(
                f"INSERT INTO documents ({_DOC_COLUMNS}) VALUES (?, ?, ?, '', ?, ?, ?, ?, 0, ?, 0, ?, ?, 0)",
                (
                    collection,
                    document_id,
                    PENDING,
                    version.content_type,
                    version.size,
                    version.etag,
                    version.metadata_json,
                    generation,
                    stamp,
                    stamp,
                ),
            )
        elif existing.status == READY:
            await self.sql.query(
                "UPDATE documents SET pending_generation = ?, update_time_us = ? WHERE collection = ? AND id = ?",
                (generation, stamp, collection, document_id),
            )
        else:
            await self.sql.query(
                "UPDATE documents SET status = ?, error = '', content_type = ?, size_bytes = ?, etag = ?,"
                " metadata = ?, pending_generation = ?, update_time_us = ? WHERE collection = ? AND id = ?",
                (
                    PENDING,
                    version.content_type,
                    version.size,
                    version.etag,
                    version.metadata_json,
                    generation,
                    stamp,
                    collection,
                    document_id,
                ),
            )

    async def commit_ingest(
        self,
        collection: str,
        document_id: str,
        generation: int,
        version: Version,
        chunks: list[tuple[str, int, str]],
    ) -> None:
        """One transaction: the new generation's chunk rows in, the document READY at it, old rows out."""
        statements: list[Statement] = [
            (
                "DELETE FROM chunks WHERE collection = ? AND document_id = ? AND generation = ?",
                (collection, document_id, generation),
            )
        ]
        for start in range(0, len(chunks), 200):
            part = chunks[start : start + 200]
            placeholders = ", ".join("(?, ?, ?, ?, ?, ?)" for _ in part)
            params: list[SqlValue] = []
            for vector_id, index, text in part:
                params += [collection, vector_id, document_id, generation, index, text]
            statements.append(
                (
                    f"INSERT INTO chunks (collection, vector_id, document_id, generation, chunk_index, text)"
                    f" VALUES {placeholders}",
                    params,
                )
            )
        statements += [
            (
                "UPDATE documents SET status = ?, error = '', content_type = ?, size_bytes = ?, etag = ?,"
                " metadata = ?, generation = ?, pending_generation = 0, chunk_count = ?, update_time_us = ?,"
                " stale_generations = CASE WHEN generation <> 0 THEN 1 ELSE stale_generations END"
                " WHERE collection = ? AND id = ?",
                (
                    READY,
                    version.content_type,
                    version.size,
                    version.etag,
                    version.metadata_json,
                    generation,
                    len(chunks),
                    now_us(),
                    collection,
                    document_id,
                ),
            ),
            (
                "DELETE FROM chunks WHERE collection = ? AND document_id = ? AND generation <> ?",
                (collection, document_id, generation),
            ),
        ]
        await self.sql.batch(statements)

    async def fail_ingest(self, collection: str, document_id: str, reason: str) -> None:
        """Record a failed ingest. A document with a READY version keeps serving it, with the failure
        in `error`; one without becomes FAILED. pending_generation stays set until
        `generation_cleaned` confirms the attempt's vectors and bytes are gone."""
        await self.sql.query(
            "UPDATE documents SET status = CASE WHEN status = 'ready' THEN 'ready' ELSE 'failed' END,"
            " error = ?, update_time_us = ? WHERE collection = ? AND id = ?",
            (reason[:2000], now_us(), collection, document_id),
        )

    async def hide_document(self, collection: str, document_id: str, reason: str) -> None:
        """FAILED, so search stops seeing it at once (the first step of a delete)."""
        await self.sql.query(
            "UPDATE documents SET status = ?, error = ?, update_time_us = ? WHERE collection = ? AND id = ?",
            (FAILED, reason, now_us(), collection, document_id),
        )

    async def stale_generations_dropped(self, collection: str, document_id: str, generation: int) -> None:
        await self.sql.query(
            "UPDATE documents SET stale_generations = 0 WHERE collection = ? AND id = ? AND generation = ?",
            (collection, document_id, generation),
        )

    async def generation_cleaned(self, collection: str, document_id: str, generation: int) -> None:
        await self.sql.query(
            "UPDATE documents SET pending_generation = 0 WHERE collection = ? AND id = ? AND pending_generation = ?",
            (collection, document_id, generation),
        )

    async def delete_document_rows(self, collection: str, document_id: str) -> None:
        await self.sql.batch(
            [
                ("DELETE FROM chunks WHERE collection = ? AND document_id = ?", (collection, document_id)),
                ("DELETE FROM documents WHERE collection = ? AND id = ?", (collection, document_id)),
            ]
        )

    # -- chunks ------------------------------------------------------------------------------

    async def visible_chunks(self, collection: str, vector_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Chunk rows of READY documents at their current generation, by vector id (one round trip)."""
        if not vector_ids:
            return {}
        placeholders = ", ".join("?" for _ in vector_ids)
        rows = await self.sql.query(
            "SELECT c.vector_id, c.document_id, c.chunk_index, c.text, d.metadata"
            " FROM chunks c JOIN documents d"
            "   ON d.collection = c.collection AND d.id = c.document_id AND d.generation = c.generation"
            f" WHERE c.collection = ? AND d.status = 'ready' AND c.vector_id IN ({placeholders})",
            [collection, *vector_ids],
            read_only=True,
        )
        return {r["vector_id"]: r for r in rows}
