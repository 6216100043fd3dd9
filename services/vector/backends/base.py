"""The one interface every vector engine implements.

The core has already validated every argument before a backend sees it: names are well
formed, a batch has unique keys and finite float32 values of the index's dimensions (unit
length for cosine indexes is NOT assumed: backends normalise if they need to), filters are
parsed trees, limits are in range. A backend's job is storage and search:

- Raise `services.runtime.errors` types: NotFound for an unknown index (reason
  INDEX_NOT_FOUND) or namespace (NAMESPACE_NOT_FOUND), AlreadyExists for a taken name;
  translate the engine library's own exceptions in one place inside the backend module.
- Every write gets the next mutation id of its index (int64, growing, surviving restarts)
  and is durable and visible to every later call when the method returns.
- `query` honours the filter inside the search (never by trimming a top-k afterwards), so
  it returns `top_k` matches whenever that many match. Scores: cosine similarity and inner
  product (higher is closer), Euclidean distance (not squared; lower is closer).
- Record order: `get_by_ids` follows the requested keys (missing ones left out), and
  `list_vectors` and `get_by_filter` order by (namespace, id) as UTF-8 bytes.
- `namespace=None` means every namespace.
"""

from __future__ import annotations

from typing import Protocol

from services.vector.filters import Filter
from services.vector.model import (
    IndexInfo,
    IndexSpec,
    Match,
    Page,
    Vector32,
    VectorBatch,
    VectorKey,
    VectorRecord,
    WriteResult,
)


class VectorBackend(Protocol):
    async def open(self) -> None:
        """Connect or load state; called once before any other method."""

    async def close(self) -> None:
        """Flush and release; no other call follows."""

    async def healthy(self) -> bool:
        """True when the engine answers."""

    async def create_index(self, spec: IndexSpec) -> IndexInfo: ...

    async def describe(self, name: str) -> IndexSpec:
        """The immutable spec of an index (cheap; the core calls it to validate every request)."""

    async def get_index(self, name: str) -> IndexInfo: ...

    async def list_indexes(self) -> list[IndexInfo]:
        """Every index, by name."""

    async def delete_index(self, name: str) -> None: ...

    async def write(self, name: str, batch: VectorBatch, *, replace: bool) -> WriteResult:
        """Upsert (replace=True) or insert, skipping keys that exist (reported in `skipped`)."""

    async def query(
        self,
        name: str,
        vector: Vector32,
        top_k: int,
        *,
        where: Filter | None,
        namespace: str | None,
        include_values: bool,
        include_metadata: bool,
    ) -> list[Match]:
        """The top_k nearest matching vectors, closest first."""

    async def get_by_ids(self, name: str, keys: list[VectorKey]) -> list[VectorRecord]: ...

    async def get_by_filter(self, name: str, where: Filter, namespace: str | None, limit: int) -> list[VectorRecord]:
        """Every matching record with values and metadata; FailedPrecondition past `limit` matches."""

    async def delete_by_ids(self, name: str, keys: list[VectorKey]) -> WriteResult: ...

    async def delete_by_filter(self, name: str, where: Filter, namespace: str | None) -> WriteResult: ...

    async def list_vectors(
        self,
        name: str,
        *,
        namespace: str | None,
        where: Filter | None,
        after: VectorKey | None,
        limit: int,
        include_values: bool,
        include_metadata: bool,
    ) -> Page:
        """Up to `limit` records ordered by (namespace, id), starting after `after`."""
