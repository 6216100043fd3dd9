"""Plain-text rendering for humans, and proto3 JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TextIO

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from strata.gateway.v1 import gateway_pb2

SNIPPET_CHARS = 240


def print_json(message: Message, stream: TextIO | None = None) -> None:
    """The proto3 JSON mapping, as the REST API returns it."""
    out = stream or sys.stdout
    out.write(json.dumps(json_format.MessageToDict(message), indent=2, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in [headers, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def timestamp(value: Timestamp) -> str:
    if not value.seconds:
        return "-"
    return value.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def collection_rows(collections: Sequence[gateway_pb2.Collection]) -> str:
    rows = [
        [c.name, str(c.document_count), str(c.chunk_count), c.embedding_model, timestamp(c.create_time), c.description]
        for c in collections
    ]
    return table(["NAME", "DOCUMENTS", "CHUNKS", "MODEL", "CREATED", "DESCRIPTION"], rows)


def collection_details(c: gateway_pb2.Collection) -> str:
    chunking = c.chunking
    overlap = str(chunking.chunk_overlap_tokens) if chunking.HasField("chunk_overlap_tokens") else "default"
    fields = [
        ("name", c.name),
        ("description", c.description or "-"),
        ("embedding model", f"{c.embedding_model} ({c.dimensions} dimensions)"),
        ("chunk size", f"{chunking.chunk_size_tokens or 'default'} tokens, overlap {overlap}"),
        ("documents", str(c.document_count)),
        ("chunks", str(c.chunk_count)),
        ("created", timestamp(c.create_time)),
    ]
    width = max(len(key) for key, _ in fields)
    return "\n".join(f"{key + ':':<{width + 1}} {value}" for key, value in fields)


def chunk_label(result: gateway_pb2.SearchResult) -> str:
    return f"{result.document_id} #{result.chunk_index}  (score {result.score:.3f})"


def search_results(results: Sequence[gateway_pb2.SearchResult]) -> str:
    if not results:
        return "no results"
    blocks = [f"{n}. {chunk_label(r)}\n   {snippet(r.text)}" for n, r in enumerate(results, start=1)]
    return "\n".join(blocks)


def sources(items: Sequence[gateway_pb2.Source]) -> str:
    """One line per source; the answer itself already cites them as [n]."""
    return "\n".join(f"[{s.citation}] {chunk_label(s.chunk)}" for s in items)
