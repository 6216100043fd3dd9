"""Plain data the core and the backends exchange; no gRPC types here."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

Vector32 = npt.NDArray[np.float32]
Metadata = dict[str, Any]


class Metric(enum.Enum):
    COSINE = "cosine"
    EUCLIDEAN = "euclidean"
    DOT_PRODUCT = "dot-product"


class IndexType(enum.Enum):
    FLAT = "flat"
    HNSW = "hnsw"


@dataclass(frozen=True)
class HnswParams:
    m: int
    ef_construction: int
    ef_search: int


@dataclass(frozen=True)
class IndexSpec:
    """What CreateIndex fixes for the life of an index."""

    name: str
    dimensions: int
    metric: Metric
    index_type: IndexType = IndexType.FLAT
    hnsw: HnswParams | None = None
    description: str = ""
    create_time: float = 0.0  # seconds since the epoch


@dataclass(frozen=True)
class IndexInfo:
    spec: IndexSpec
    vector_count: int
    last_mutation_id: int


class VectorKey(NamedTuple):
    """A vector's identity: its id within its namespace. Orders by (namespace, id).

    A tuple rather than a dataclass: keys are hashed several times per vector written. Its natural
    order is the contract's byte order: Python orders str by code point, which is the order of
    their UTF-8 bytes, so every backend sorts keys alike with no key function."""

    namespace: str
    id: str


# tuple.__new__ bound to VectorKey: make_key((namespace, id)) builds a key without the Python-level
# __new__ a NamedTuple has (a bulk write makes thousands).
make_key = partial(tuple.__new__, VectorKey)


def keys_in(namespace: str, ids: Iterable[str]) -> list[VectorKey]:
    """VectorKeys for many ids of one namespace, at C speed."""
    return list(map(make_key, zip(repeat(namespace), ids)))


@dataclass
class VectorRecord:
    key: VectorKey
    values: Vector32 | None = None
    metadata: Metadata | None = None


@dataclass(frozen=True)
class VectorBatch:
    """A validated write batch: unique keys, finite values of the index's dimensions."""

    keys: list[VectorKey]
    values: Vector32  # shape (len(keys), dimensions)
    metadata: list[Metadata]
    # Each metadata object as compact JSON, computed once for the size check and reused by logs.
    metadata_json: list[str]


@dataclass(frozen=True)
class Match:
    key: VectorKey
    score: float
    values: Vector32 | None = None
    metadata: Metadata | None = None


@dataclass(frozen=True)
class WriteResult:
    mutation_id: int
    count: int
    skipped: list[VectorKey] = field(default_factory=list)


@dataclass(frozen=True)
class Page:
    records: list[VectorRecord]
    # The key after which the next page starts; None on the last page.
    next_after: VectorKey | None


_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def norms_outside_float32(values: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Rows whose squared norm float32 cannot hold: past ~3.4e38, or under its smallest normal
    number (~1.2e-38). A cosine norm computed in float32, as FAISS and Milvus compute it, comes
    out wrong for them."""
    squares = np.einsum("ij,ij->i", values, values)
    return ~((squares >= _FLOAT32_TINY) & (squares < np.inf))
