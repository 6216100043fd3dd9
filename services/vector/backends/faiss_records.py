"""How a FAISS index keeps each vector's key and metadata: plain tuples of strings.

A record is `((namespace, id), metadata as compact JSON text)`. Nothing in it is a container
Python's cycle collector must watch: once a collection has seen them, tuples holding only
strings are no longer tracked, so a full collection no longer walks every vector. With a
`VectorKey` (a tuple subclass, tracked for good) and the metadata dict in each record, a full
collection at 500k vectors took ~190 ms here, stopping every request; with these, a few tens.
The JSON text is also smaller than the dict it stands for (~150 bytes less per vector for
three small fields). Reads parse it again (~1 us per record), and return a fresh dict each
time, so no caller can change what the index holds.

Keys compare and hash as the `VectorKey`s callers use (a `VectorKey` is a tuple), so the maps
are looked up with either; keys leave the index as `VectorKey`s again (`make_key`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import orjson

from services.vector.model import Metadata, VectorKey

Key = tuple[str, str]  # (namespace, id)
Record = tuple[Key, str]  # (key, metadata as JSON text)


def stored_keys(keys: Iterable[VectorKey]) -> list[Key]:
    """The keys as the index stores them: exact tuples (a `VectorKey` is always tracked)."""
    return list(map(tuple, keys))  # type: ignore[arg-type]


def text_of(metadata: Metadata) -> str:
    """The JSON text of metadata replayed from a log or an older snapshot (as dicts). Very old
    ones may hold NaN or Infinity: the standard library keeps those, where orjson would write
    null."""
    text = orjson.dumps(metadata)
    if b"null" in text:  # a null, or a NaN orjson wrote as one
        return json.dumps(metadata, separators=(",", ":"))
    return text.decode()


def texts_of(metadata: list[Metadata]) -> list[str]:
    return [text_of(fields) for fields in metadata]


def parsed(text: str) -> Any:
    """The metadata a record holds, as a new dict."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity, from a very old log
        return json.loads(text)
