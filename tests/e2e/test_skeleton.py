"""The walking skeleton: a collection, a plain-text document, and Search finding it, through all five services."""

from __future__ import annotations

import uuid

import grpc
import pytest

from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_put_document_then_search_finds_it(gateway: gateway_pb2_grpc.GatewayServiceStub) -> None:
    name = unique("skeleton")
    created = gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=name)).collection
    assert created.name == name and created.dimensions == 384
    gateway.PutDocument(
        gateway_pb2.PutDocumentRequest(
            collection=name, document_id="bees", text="Honey bees communicate the location of flowers by dancing."
        )
    )
    gateway.PutDocument(
        gateway_pb2.PutDocumentRequest(
            collection=name, document_id="volcano", text="Basaltic lava flows from shield volcanoes such as Mauna Loa."
        )
    )
    results = gateway.Search(gateway_pb2.SearchRequest(collection=name, query="how do bees tell where flowers are?"))
    assert results.results[0].document_id == "bees"
    assert "dancing" in results.results[0].text
    assert results.results[0].score > results.results[-1].score or len(results.results) == 1


def test_unknown_collection_is_not_found(gateway: gateway_pb2_grpc.GatewayServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        gateway.Search(gateway_pb2.SearchRequest(collection="no-such-collection", query="anything"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-collection" in (caught.value.details() or "")
