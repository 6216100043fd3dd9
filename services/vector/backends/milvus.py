"""The scale-out backend: one Milvus collection per index, through pymilvus.

Layout in Milvus:
- `strata_vector_indexes`: one row per index (its spec as JSON and its last mutation id),
  the catalog; Milvus needs a vector field in every collection, so it carries a dummy one.
- `strata_<hex of the index name>` per index: pk (hex namespace '.' hex id), ns, vid, the
  vector and a JSON `metadata` field. Strong consistency, so a write is visible to the
  next read. The pk sorts in the contract's (namespace, id) order, so ListVectors reads one
  page at a time by primary key. Collections made before that (pk layout 1, hex namespace
  ':' hex id, which does not sort so) still work; their listing reads every key after the
  cursor for each page.

Mutation ids: this server serialises writes per index and bumps the catalog row after the
data write and before replying, so every acknowledged id is persisted and ids grow. One
vector service should front a given Milvus database (several would need a shared counter).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    StrataError,
    Unavailable,
)
from services.vector.backends import milvus_expr
from services.vector.backends.faiss_storage import spec_from_json, spec_to_json
from services.vector.config import VectorSettings
from services.vector.filters import Filter
from services.vector.model import (
    IndexInfo,
    IndexSpec,
    IndexType,
    Match,
    Metric,
    Page,
    Vector32,
    VectorBatch,
    VectorKey,
    VectorRecord,
    WriteResult,
    norms_outside_float32,
)

log = logging.getLogger("strata.vector.milvus")
# pymilvus logs every failed call with a traceback; failures are translated and reported by us.
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)

CATALOG = "strata_vector_indexes"
MAX_QUERY_WINDOW = 16_384  # Milvus caps offset + limit of one query
_METRICS = {Metric.COSINE: "COSINE", Metric.EUCLIDEAN: "L2", Metric.DOT_PRODUCT: "IP"}


def _check_cosine_norms(spec: IndexSpec, values: np.ndarray, ids: list[str] | None) -> None:
    """Milvus computes cosine norms in float32: a vector whose squared norm overflows (components
    past ~1e19) or underflows (all under ~1e-19) would score ~0 against everything, itself
    included. Refused, naming the vector (`ids`; None for a query), rather than stored or searched
    and mis-scored (FAISS scores them)."""
    if spec.metric is not Metric.COSINE:
        return
    outside = norms_outside_float32(values)
    if not outside.any():
        return
    row = int(np.argmax(outside))
    what = "the query vector" if ids is None else f"vector {ids[row]!r}"
    raise InvalidArgument(
        f"{what} has a norm Milvus cannot compute cosine with in float32 (its squared norm must lie "
        "between ~1.2e-38 and ~3.4e38): scale it, or use the FAISS backend",
        reason="NORM_OUT_OF_RANGE",
        metadata={} if ids is None else {"id": ids[row]},
    )


_RECORD_FIELDS = ["ns", "vid", "vector", "metadata"]

T = TypeVar("T")


@contextlib.contextmanager
def milvus_errors(action: str) -> Iterator[None]:
    """Translate pymilvus failures (the one place): a down server is UNAVAILABLE, the rest INTERNAL."""
    try:
        yield
    except StrataError:
        raise
    except MilvusException as exc:
        code = getattr(exc, "code", None)
        message = getattr(exc, "message", str(exc))
        if code in (1, 2) or "unavailable" in str(message).lower() or "connect" in str(message).lower():
            raise Unavailable(f"Milvus did not answer while {action}: {message}", reason="MILVUS_UNAVAILABLE") from exc
        raise StrataError(f"Milvus failed while {action}: {message}", reason="MILVUS_ERROR") from exc
    except (OSError, TimeoutError) as exc:
        raise Unavailable(f"Milvus did not answer while {action}: {exc}", reason="MILVUS_UNAVAILABLE") from exc


def collection_name(index: str) -> str:
    # Milvus names allow letters, digits and '_' only; hex keeps every index name distinct.
    return "strata_" + index.encode().hex()


PK_LAYOUT = 2  # the primary key layout of collections created now
_PK_SEPARATORS = {1: ":", 2: "."}


def pk_of(key: VectorKey, layout: int) -> str:
    """A vector's primary key. Hex keeps it free of quotes (pymilvus' query iterator splices pks
    into expressions unescaped). Layout 2 separates namespace and id with '.', which sorts below
    every hex digit, so primary keys sort as their (namespace, id) UTF-8 bytes do; layout 1's ':'
    sorts above the digits, putting namespace "ab" before "a"."""
    return key.namespace.encode().hex() + _PK_SEPARATORS[layout] + key.id.encode().hex()


def _output_fields(values: bool, metadata: bool) -> list[str]:
    return ["ns", "vid"] + (["vector"] if values else []) + (["metadata"] if metadata else [])


def _namespace_expr(namespace: str | None) -> str:
    return "" if namespace is None else f"ns == {milvus_expr.string_literal(namespace)}"


class MilvusBackend:
    def __init__(self, settings: VectorSettings) -> None:
        self.settings = settings
        self._client: MilvusClient | None = None
        self._specs: dict[str, IndexSpec] = {}
        self._mutations: dict[str, int] = {}
        self._layouts: dict[str, int] = {}  # index -> primary key layout
        self._locks: dict[str, asyncio.Lock] = {}

    # ---- plumbing --------------------------------------------------------------------

    @property
    def client(self) -> MilvusClient:
        assert self._client is not None, "backend not opened"
        return self._client

    async def _call(self, action: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def run() -> T:
            with milvus_errors(action):
                return fn(*args, **kwargs)

        return await asyncio.to_thread(run)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    # ---- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        def connect() -> MilvusClient:
            with milvus_errors("connecting"):
                return MilvusClient(
                    uri=self.settings.milvus_uri,
                    token=self.settings.milvus_token,
                    timeout=self.settings.milvus_timeout_seconds,
                )

        self._client = await asyncio.to_thread(connect)
        if not await self._call("checking the catalog", self.client.has_collection, CATALOG):
            await self._call("creating the catalog", self._create_catalog)
        rows = await self._call(
            "reading the catalog",
            self.client.query,
            CATALOG,
            filter='name != ""',
            output_fields=["name", "spec", "mutation"],
            limit=MAX_QUERY_WINDOW,
        )
        for row in rows:
            saved = json.loads(row["spec"])
            self._specs[row["name"]] = spec_from_json(saved)
            self._mutations[row["name"]] = int(row["mutation"])
            self._layouts[row["name"]] = int(saved.get("pk_layout", 1))

    def _create_catalog(self) -> None:
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("spec", DataType.VARCHAR, max_length=8192)
        schema.add_field("mutation", DataType.INT64)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)
        params = self.client.prepare_index_params()
        params.add_index(field_name="unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(CATALOG, schema=schema, index_params=params, consistency_level="Strong")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await asyncio.to_thread(client.close)

    async def healthy(self) -> bool:
        if self._client is None:
            return False
        await self._call("checking health", self.client.has_collection, CATALOG)
        return True

    # ---- catalog ---------------------------------------------------------------------

    def _spec(self, name: str) -> IndexSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise NotFound(f"index {name!r} does not exist", reason="INDEX_NOT_FOUND", metadata={"index": name})
        return spec

    def _pks(self, name: str, keys: list[VectorKey]) -> list[str]:
        layout = self._layouts[name]
        return [pk_of(key, layout) for key in keys]

    def _keys_expr(self, name: str, keys: list[VectorKey]) -> str:
        return "pk in [" + ", ".join(map(milvus_expr.string_literal, self._pks(name, keys))) + "]"

    async def _save_mutation(self, spec: IndexSpec, mutation: int) -> None:
        saved = {**spec_to_json(spec), "pk_layout": self._layouts[spec.name]}
        row = {"name": spec.name, "spec": json.dumps(saved), "mutation": mutation, "unused": [0.0, 0.0]}
        await self._call("recording the mutation", self.client.upsert, CATALOG, [row])
        self._mutations[spec.name] = mutation

    async def create_index(self, spec: IndexSpec) -> IndexInfo:
        async with self._lock(spec.name):
            if spec.name in self._specs:
                raise AlreadyExists(
                    f"index {spec.name!r} already exists", reason="INDEX_EXISTS", metadata={"index": spec.name}
                )
            await self._call("creating the index", self._create_collection, spec)
            self._specs[spec.name] = spec
            self._layouts[spec.name] = PK_LAYOUT
            await self._save_mutation(spec, 0)
            return IndexInfo(spec, 0, 0)

    def _create_collection(self, spec: IndexSpec) -> None:
        name = collection_name(spec.name)
        if self.client.has_collection(name):
            self.client.drop_collection(name)  # left by a create that never reached the catalog
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=300)
        schema.add_field("ns", DataType.VARCHAR, max_length=256)
        schema.add_field("vid", DataType.VARCHAR, max_length=256)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=spec.dimensions)
        schema.add_field("metadata", DataType.JSON)
        params = self.client.prepare_index_params()
        if spec.index_type is IndexType.HNSW:
            assert spec.hnsw is not None
            params.add_index(
                field_name="vector",
                index_type="HNSW",
                metric_type=_METRICS[spec.metric],
                params={"M": spec.hnsw.m, "efConstruction": spec.hnsw.ef_construction},
            )
        else:
            params.add_index(field_name="vector", index_type="FLAT", metric_type=_METRICS[spec.metric])
        self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")

    async def describe(self, name: str) -> IndexSpec:
        return self._spec(name)

    async def _count(self, name: str, expr: str = "") -> int:
        rows = await self._call(
            "counting vectors", self.client.query, collection_name(name), filter=expr, output_fields=["count(*)"]
        )
        return int(rows[0]["count(*)"])

    async def _any(self, name: str, expr: str) -> bool:
        rows = await self._call(
            "looking up vectors", self.client.query, collection_name(name), filter=expr, output_fields=["pk"], limit=1
        )
        return bool(rows)

    async def get_index(self, name: str) -> IndexInfo:
        spec = self._spec(name)
        return IndexInfo(spec, await self._count(name), self._mutations.get(name, 0))

    async def list_indexes(self) -> list[IndexInfo]:
        return [await self.get_index(name) for name in sorted(self._specs)]

    async def delete_index(self, name: str) -> None:
        async with self._lock(name):
            self._spec(name)
            await self._call("deleting the index", self.client.delete, CATALOG, filter=f"name == {json.dumps(name)}")
            del self._specs[name]
            self._mutations.pop(name, None)
            self._layouts.pop(name, None)
            await self._call("dropping the collection", self.client.drop_collection, collection_name(name))

    # ---- writes ----------------------------------------------------------------------

    async def _existing(self, name: str, keys: list[VectorKey]) -> set[VectorKey]:
        found: set[VectorKey] = set()
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            rows = await self._call(
                "looking up ids",
                self.client.query,
                collection_name(name),
                filter=self._keys_expr(name, chunk),
                output_fields=["ns", "vid"],
                limit=len(chunk),
            )
            found.update(VectorKey(r["ns"], r["vid"]) for r in rows)
        return found

    async def _next_mutation(self, spec: IndexSpec) -> int:
        mutation = self._mutations.get(spec.name, 0) + 1
        await self._save_mutation(spec, mutation)
        return mutation

    async def write(self, name: str, batch: VectorBatch, *, replace: bool) -> WriteResult:
        async with self._lock(name):
            spec = self._spec(name)
            _check_cosine_norms(spec, batch.values, [key.id for key in batch.keys])
            skipped: list[VectorKey] = []
            rows = range(len(batch.keys))
            if not replace:
                existing = await self._existing(name, batch.keys)
                skipped = [k for k in batch.keys if k in existing]
                rows = [i for i, k in enumerate(batch.keys) if k not in existing]  # type: ignore[assignment]
            layout = self._layouts[name]
            data = [
                {
                    "pk": pk_of(batch.keys[i], layout),
                    "ns": batch.keys[i].namespace,
                    "vid": batch.keys[i].id,
                    "vector": batch.values[i].tolist(),
                    "metadata": batch.metadata[i],
                }
                for i in rows
            ]
            if data:
                await self._call("writing vectors", self.client.upsert, collection_name(name), data)
            return WriteResult(await self._next_mutation(spec), len(data), skipped)

    async def delete_by_ids(self, name: str, keys: list[VectorKey]) -> WriteResult:
        async with self._lock(name):
            spec = self._spec(name)
            present = await self._existing(name, list(dict.fromkeys(keys)))
            if present:
                await self._call(
                    "deleting vectors", self.client.delete, collection_name(name), ids=self._pks(name, list(present))
                )
            return WriteResult(await self._next_mutation(spec), len(present))

    async def delete_by_filter(self, name: str, where: Filter, namespace: str | None) -> WriteResult:
        async with self._lock(name):
            spec = self._spec(name)
            expr = milvus_expr.combine(milvus_expr.render(where), _namespace_expr(namespace))
            doomed = await self._count(name, expr)
            if doomed:
                await self._call(
                    "deleting vectors", self.client.delete, collection_name(name), filter=expr or 'vid != ""'
                )
            return WriteResult(await self._next_mutation(spec), doomed)

    # ---- reads -----------------------------------------------------------------------

    def _record(self, row: dict[str, Any], values: bool = True, metadata: bool = True) -> VectorRecord:
        return VectorRecord(
            VectorKey(row["ns"], row["vid"]),
            np.asarray(row["vector"], dtype=np.float32) if values else None,
            dict(row["metadata"] or {}) if metadata else None,
        )

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
        spec = self._spec(name)
        _check_cosine_norms(spec, vector.reshape(1, -1), None)
        expr = milvus_expr.combine("" if where is None else milvus_expr.render(where), _namespace_expr(namespace))
        fields = _output_fields(include_values, include_metadata)
        params: dict[str, Any] = {"metric_type": _METRICS[spec.metric]}
        if spec.hnsw is not None:
            params["params"] = {"ef": max(spec.hnsw.ef_search, top_k)}
        hits = await self._call(
            "searching",
            self.client.search,
            collection_name(name),
            data=[vector.tolist()],
            limit=top_k,
            filter=expr,
            output_fields=fields,
            search_params=params,
        )
        if not hits[0] and namespace is not None and not await self._any(name, _namespace_expr(namespace)):
            # Only an empty result asks whether the namespace exists: one call less for every other query.
            raise NotFound(
                f"namespace {namespace!r} does not exist in index {name!r}",
                reason="NAMESPACE_NOT_FOUND",
                metadata={"index": name, "namespace": namespace},
            )
        matches = []
        for hit in hits[0]:
            entity = hit["entity"]
            distance = float(hit["distance"])
            score = math.sqrt(max(distance, 0.0)) if spec.metric is Metric.EUCLIDEAN else distance
            record = self._record(entity, include_values, include_metadata)
            matches.append(Match(record.key, score, record.values, record.metadata))
        return matches

    async def get_by_ids(self, name: str, keys: list[VectorKey]) -> list[VectorRecord]:
        self._spec(name)
        found: dict[VectorKey, VectorRecord] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 1000):
            rows = await self._call(
                "reading vectors",
                self.client.get,
                collection_name(name),
                ids=self._pks(name, unique[start : start + 1000]),
                output_fields=_RECORD_FIELDS,
            )
            for row in rows:
                record = self._record(row)
                found[record.key] = record
        return [found[k] for k in keys if k in found]

    async def get_by_filter(self, name: str, where: Filter, namespace: str | None, limit: int) -> list[VectorRecord]:
        self._spec(name)
        expr = milvus_expr.combine(milvus_expr.render(where), _namespace_expr(namespace))
        rows = await self._call(
            "reading vectors",
            self.client.query,
            collection_name(name),
            filter=expr or 'vid != ""',
            output_fields=_RECORD_FIELDS,
            limit=limit + 1,
        )
        if len(rows) > limit:
            matches = await self._count(name, expr)
            raise FailedPrecondition(
                f"the filter matches {matches} vectors; GetVectors returns at most {limit}: "
                "page through ListVectors instead",
                reason="TOO_MANY_MATCHES",
                metadata={"matches": str(matches), "limit": str(limit)},
            )
        records = [self._record(r) for r in rows]
        records.sort(key=lambda r: r.key)
        return records

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
        self._spec(name)
        layout = self._layouts[name]
        selected = milvus_expr.combine("" if where is None else milvus_expr.render(where), _namespace_expr(namespace))
        if layout == 1:
            return await self._list_unordered(name, selected, after, limit, include_values, include_metadata)
        fields = _output_fields(include_values, include_metadata)
        position = "" if after is None else f"pk > {milvus_expr.string_literal(pk_of(after, layout))}"
        expr = milvus_expr.combine(selected, position) or 'vid != ""'
        rows = await self._call("listing vectors", self._first_rows, name, expr, limit + 1, fields)
        records = [self._record(row, include_values, include_metadata) for row in rows[:limit]]
        return Page(records, records[-1].key if len(rows) > limit else None)

    def _first_rows(self, name: str, expr: str, count: int, fields: list[str]) -> list[dict[str, Any]]:
        """The first `count` rows matching `expr` in primary key order. A query iterator is what
        reads in that order (a plain query's order is unspecified); a batch may come back short
        (Milvus stops merging segments early), so it reads on until it has them or none are left."""
        rows: list[dict[str, Any]] = []
        with contextlib.closing(self._batches(name, expr, count, fields)) as batches:
            for batch in batches:
                rows.extend(batch)
                if len(rows) >= count:
                    break
        return rows[:count]

    async def _list_unordered(
        self, name: str, selected: str, after: VectorKey | None, limit: int, values: bool, metadata: bool
    ) -> Page:
        """Listing a layout-1 collection, whose primary keys do not sort in key order: the keys
        after the cursor are read and sorted here (one pass over them per page), then the page's
        records fetched."""
        position = ""
        if after is not None:
            ns, vid = milvus_expr.string_literal(after.namespace), milvus_expr.string_literal(after.id)
            position = f"(ns > {ns} or (ns == {ns} and vid > {vid}))"
        expr = milvus_expr.combine(selected, position)
        keys = await self._call("listing vectors", self._matching_keys, name, expr or 'vid != ""')
        keys.sort()
        page = keys[: limit + 1]
        more = len(page) > limit
        page = page[:limit]
        records: list[VectorRecord] = []
        if page:
            rows = await self._call(
                "reading vectors",
                self.client.get,
                collection_name(name),
                ids=self._pks(name, page),
                output_fields=_output_fields(values, metadata),
            )
            by_key = {VectorKey(r["ns"], r["vid"]): r for r in rows}
            records = [self._record(by_key[k], values, metadata) for k in page if k in by_key]
        return Page(records, page[-1] if more and page else None)

    def _matching_keys(self, name: str, expr: str) -> list[VectorKey]:
        return [VectorKey(r["ns"], r["vid"]) for batch in self._batches(name, expr, 4096, ["ns", "vid"]) for r in batch]

    def _batches(
        self, name: str, expr: str, size: int, fields: list[str]
    ) -> Generator[list[dict[str, Any]], None, None]:
        """The rows matching `expr` in primary key order, `size` at a time (a batch may be
        shorter), through a query iterator that is closed however the caller stops."""
        iterator = self.client.query_iterator(collection_name(name), batch_size=size, filter=expr, output_fields=fields)
        try:
            while batch := iterator.next():
                yield batch
        finally:
            iterator.close()
