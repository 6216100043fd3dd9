"""Stacks, documents and comparisons shared by the backup tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from gateway import naming
from gateway.backup.layers import Addresses, Layers
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from strata.metadata.v1 import metadata_pb2
from strata.vector.v1 import vector_pb2
from tests.support.stack import LAYERS, serve_gateway, serve_layer

TEXTS = {
    "bees": "Honey bees communicate the location of flowers by dancing. The waggle dance encodes direction and "
    "distance relative to the sun, and foragers follow it to rich patches of blossoms.",
    "volcano": "Basaltic lava flows from shield volcanoes such as Mauna Loa. Their gentle slopes come from runny "
    "lava that travels far before it cools into dark rock.",
    "tides": "Tides rise and fall twice a day because the moon's gravity pulls the oceans into two bulges that the "
    "earth rotates through.",
    "bread": "Sourdough bread rises thanks to wild yeast and lactic acid bacteria living in a starter of flour and "
    "water, which also give it a sour taste.",
    "chess": "In chess the knight moves in an L shape and is the only piece that can jump over others.",
}
QUERIES = ["how do bees find flowers?", "where does dark volcanic rock come from?", "why are there two tides?"]


def layers_of(addresses: dict[str, str]) -> Layers:
    return Layers.connect(Addresses(vector=addresses["vector"], metadata=addresses["metadata"], blob=addresses["blob"]))


@contextlib.contextmanager
def bare_layers(data_dir: Path, per_layer: dict[str, dict[str, Any]] | None = None) -> Iterator[dict[str, str]]:
    """The four layers on port 0 without a gateway (a gateway creates its database and bucket at start)."""
    with contextlib.ExitStack() as stack:
        yield {
            name: stack.enter_context(serve_layer(name, data_dir, **(per_layer or {}).get(name, {}))) for name in LAYERS
        }


@contextlib.contextmanager
def gateway_stub(layers: dict[str, str]) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with serve_gateway(layers) as (address, _rest), grpc.insecure_channel(address) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)


def put(gateway: gateway_pb2_grpc.GatewayServiceStub, collection: str, document_id: str, text: str, **meta: Any) -> Any:
    metadata = struct_pb2.Struct()
    metadata.update(meta)
    return gateway.PutDocument(
        gateway_pb2.PutDocumentRequest(collection=collection, document_id=document_id, text=text, metadata=metadata),
        timeout=120,
    ).document


def searches(gateway: gateway_pb2_grpc.GatewayServiceStub, collections: list[str]) -> dict[tuple[str, str], list[Any]]:
    results = {}
    for collection in collections:
        for query in QUERIES:
            reply = gateway.Search(gateway_pb2.SearchRequest(collection=collection, query=query, top_k=8), timeout=60)
            results[(collection, query)] = [(r.document_id, r.chunk_index, r.text, r.score) for r in reply.results]
    return results


def assert_same_results(
    before: dict[tuple[str, str], list[Any]], after: dict[tuple[str, str], list[Any]], tolerance: float = 1e-5
) -> None:
    assert before.keys() == after.keys()
    for key, expected in before.items():
        got = after[key]
        assert [r[:3] for r in got] == [r[:3] for r in expected], key
        for (*_, score_before), (*_, score_after) in zip(expected, got, strict=True):
            assert abs(score_before - score_after) <= tolerance, key


def collection_counts(gateway: gateway_pb2_grpc.GatewayServiceStub, names: list[str]) -> dict[str, tuple[int, int]]:
    counts = {}
    for name in names:
        c = gateway.GetCollection(gateway_pb2.GetCollectionRequest(name=name)).collection
        counts[name] = (c.document_count, c.chunk_count)
    return counts


def documents(gateway: gateway_pb2_grpc.GatewayServiceStub, collection: str) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        page = gateway.ListDocuments(
            gateway_pb2.ListDocumentsRequest(collection=collection, page_size=1000, page_token=token)
        )
        found += page.documents
        token = page.next_page_token
        if not token:
            return found


def vectors_of(layers: Layers, collection: str, document_id: str, generation: int) -> int:
    where = struct_pb2.Struct()
    where.update({naming.DOC_KEY: naming.document_key(document_id), naming.GENERATION_KEY: generation})
    reply = layers.vector.GetVectors(
        vector_pb2.GetVectorsRequest(index_name=naming.index_name(collection), filter=where)
    )
    return len(reply.vectors)


def sql(layers: Layers, statement: str, *params: Any) -> list[dict[str, Any]]:
    values = [
        metadata_pb2.Value(int_value=p) if isinstance(p, int) else metadata_pb2.Value(text_value=p) for p in params
    ]
    reply = layers.metadata.Query(
        metadata_pb2.QueryRequest(database="strata_gateway", sql=statement, params=values, as_records=True)
    )
    out = []
    for record in reply.result.records:
        out.append({k: getattr(v, v.WhichOneof("kind") or "null_value") for k, v in record.fields.items()})
    return out
