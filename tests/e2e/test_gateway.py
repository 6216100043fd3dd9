"""The gateway's application behaviour over gRPC: documents, search, filters, deletes, errors."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.protobuf import struct_pb2

from strata.blob.v1 import blob_pb2, blob_pb2_grpc
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from strata.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.support.stack import Stack

Stub = gateway_pb2_grpc.GatewayServiceStub


def new_collection(gateway: Stub, **kwargs: object) -> str:
    name = f"gw-{uuid.uuid4().hex[:8]}"
    gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=name, **kwargs))  # type: ignore[arg-type]
    return name


def struct(values: dict[str, object]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(values)
    return s


def put(gateway: Stub, collection: str, doc: str, text: str, **metadata: object) -> gateway_pb2.PutDocumentResponse:
    return gateway.PutDocument(
        gateway_pb2.PutDocumentRequest(collection=collection, document_id=doc, text=text, metadata=struct(metadata))
    )


def expect(code: grpc.StatusCode, call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, **kwargs)
    assert caught.value.code() == code, caught.value.details()
    return caught.value


def test_same_bytes_change_nothing_and_new_bytes_replace_old_chunks(gateway: Stub) -> None:
    name = new_collection(gateway)
    first = put(gateway, name, "d", "Kiwi birds cannot fly and live in New Zealand.")
    assert first.changed
    again = put(gateway, name, "d", "Kiwi birds cannot fly and live in New Zealand.")
    assert not again.changed
    assert again.document.update_time == first.document.update_time
    put(gateway, name, "d", "Penguins swim in cold southern oceans.")
    hits = gateway.Search(gateway_pb2.SearchRequest(collection=name, query="flightless bird of New Zealand")).results
    assert [h.text for h in hits] == ["Penguins swim in cold southern oceans."]
    doc = gateway.GetDocument(gateway_pb2.GetDocumentRequest(collection=name, document="d")).document
    assert doc.status == gateway_pb2.DOCUMENT_STATUS_READY and doc.chunk_count == 1
    assert doc.content_type == "text/plain" and doc.size_bytes == len(b"Penguins swim in cold southern oceans.")


def test_metadata_filters_restrict_search(gateway: Stub) -> None:
    name = new_collection(gateway)
    put(gateway, name, "a", "Espresso is brewed by forcing hot water through coffee.", lang="en", year=2020)
    put(gateway, name, "b", "Cold brew coffee steeps for many hours.", lang="en", year=2015)
    put(gateway, name, "c", "Le café filtre est préparé lentement.", lang="fr", year=2021)

    def ids(filter_: dict[str, object]) -> set[str]:
        reply = gateway.Search(gateway_pb2.SearchRequest(collection=name, query="coffee", filter=struct(filter_)))
        return {h.document_id for h in reply.results}

    assert ids({"lang": "fr"}) == {"c"}
    assert ids({"year": {"$gte": 2020}}) == {"a", "c"}
    assert ids({"$or": [{"lang": "fr"}, {"year": {"$lt": 2016}}]}) == {"b", "c"}
    hit = gateway.Search(gateway_pb2.SearchRequest(collection=name, query="espresso", top_k=1)).results[0]
    assert hit.document_id == "a" and hit.metadata["year"] == 2020
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        gateway.Search,
        gateway_pb2.SearchRequest(collection=name, query="x", filter=struct({"_strata_doc": "x"})),
    )
    expect(
        grpc.StatusCode.INVALID_ARGUMENT,
        gateway.Search,
        gateway_pb2.SearchRequest(collection=name, query="x", filter=struct({"year": {"$near": 1}})),
    )


def test_list_documents_pages_and_filters_by_status(gateway: Stub) -> None:
    name = new_collection(gateway)
    for i in range(5):
        put(gateway, name, f"doc-{i}", f"Document number {i} talks about lighthouses.")
    seen, token = [], ""
    while True:
        page = gateway.ListDocuments(gateway_pb2.ListDocumentsRequest(collection=name, page_size=2, page_token=token))
        seen += [d.id for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"doc-{i}" for i in range(5)]
    # A token is refused unless this service issued it for this listing (a bare id was taken as one).
    collections_token = gateway.ListCollections(gateway_pb2.ListCollectionsRequest(page_size=1)).next_page_token
    assert collections_token
    for bad in ("doc-1", "!!!", collections_token):
        error = expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            gateway.ListDocuments,
            gateway_pb2.ListDocumentsRequest(collection=name, page_token=bad),
        )
        assert "page_token" in (error.details() or "")
    ready = gateway.ListDocuments(
        gateway_pb2.ListDocumentsRequest(collection=name, status=gateway_pb2.DOCUMENT_STATUS_READY)
    )
    assert len(ready.documents) == 5
    failed = gateway.ListDocuments(
        gateway_pb2.ListDocumentsRequest(collection=name, status=gateway_pb2.DOCUMENT_STATUS_FAILED)
    )
    assert not failed.documents
    counts = gateway.GetCollection(gateway_pb2.GetCollectionRequest(name=name)).collection
    assert counts.document_count == 5 and counts.chunk_count == 5


def test_delete_document_and_collection_remove_everything_in_every_layer(gateway: Stub, stack: Stack) -> None:
    name = new_collection(gateway)
    put(gateway, name, "keep", "Glaciers carve U-shaped valleys.")
    put(gateway, name, "drop", "Sourdough bread rises with wild yeast.")
    gateway.DeleteDocument(gateway_pb2.DeleteDocumentRequest(collection=name, document="drop"))
    expect(
        grpc.StatusCode.NOT_FOUND, gateway.GetDocument, gateway_pb2.GetDocumentRequest(collection=name, document="drop")
    )
    hits = gateway.Search(gateway_pb2.SearchRequest(collection=name, query="bread yeast")).results
    assert {h.document_id for h in hits} == {"keep"}

    gateway.DeleteCollection(gateway_pb2.DeleteCollectionRequest(name=name))
    expect(grpc.StatusCode.NOT_FOUND, gateway.GetCollection, gateway_pb2.GetCollectionRequest(name=name))
    with grpc.insecure_channel(stack.layers["vector"]) as channel:
        expect(
            grpc.StatusCode.NOT_FOUND,
            vector_pb2_grpc.VectorServiceStub(channel).GetIndex,
            vector_pb2.GetIndexRequest(name=name),
        )
    with grpc.insecure_channel(stack.layers["blob"]) as channel:
        objects = blob_pb2_grpc.BlobServiceStub(channel).ListObjects(
            blob_pb2.ListObjectsRequest(bucket="strata-documents", prefix=f"{name}/")
        )
        assert not objects.objects
    with grpc.insecure_channel(stack.layers["metadata"]) as channel:
        rows = (
            metadata_pb2_grpc.MetadataServiceStub(channel)
            .Query(
                metadata_pb2.QueryRequest(
                    database="strata_gateway",
                    sql="SELECT (SELECT COUNT(*) FROM documents WHERE collection = ?)"
                    " + (SELECT COUNT(*) FROM chunks WHERE collection = ?) AS n",
                    params=[metadata_pb2.Value(text_value=name), metadata_pb2.Value(text_value=name)],
                )
            )
            .result.rows
        )
        assert rows[0].values[0].int_value == 0
    # The name is free again.
    gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=name))


def test_bad_input_gets_clear_errors_and_changes_nothing(gateway: Stub) -> None:
    name = new_collection(gateway)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect(invalid, gateway.CreateCollection, gateway_pb2.CreateCollectionRequest(name="Upper"))
    expect(
        invalid,
        gateway.CreateCollection,
        gateway_pb2.CreateCollectionRequest(name="x-model", embedding_model="no-such-model"),
    )
    expect(
        invalid,
        gateway.CreateCollection,
        gateway_pb2.CreateCollectionRequest(name="x-chunks", chunking=gateway_pb2.ChunkingConfig(chunk_size_tokens=8)),
    )
    expect(grpc.StatusCode.ALREADY_EXISTS, gateway.CreateCollection, gateway_pb2.CreateCollectionRequest(name=name))
    expect(invalid, gateway.PutDocument, gateway_pb2.PutDocumentRequest(collection=name, document_id="e", text=""))
    error = expect(
        invalid,
        gateway.PutDocument,
        gateway_pb2.PutDocumentRequest(collection=name, document_id="img", data=b"\x89PNG", content_type="image/png"),
    )
    assert "image/png" in (error.details() or "")
    expect(invalid, gateway.PutDocument, gateway_pb2.PutDocumentRequest(collection=name, data=b"%PDF-1.4"))
    expect(
        invalid,
        gateway.PutDocument,
        gateway_pb2.PutDocumentRequest(collection=name, document_id="bad\x01id", text="x"),
    )
    expect(
        grpc.StatusCode.NOT_FOUND,
        gateway.PutDocument,
        gateway_pb2.PutDocumentRequest(collection="missing-collection", text="x"),
    )
    for bad in (float("nan"), float("inf")):  # a Struct carries them; JSON, and the stored metadata, cannot
        error = expect(
            invalid,
            gateway.PutDocument,
            gateway_pb2.PutDocumentRequest(collection=name, document_id="nan", text="x", metadata=struct({"n": bad})),
        )
        assert "NaN or Infinity" in (error.details() or "")
        expect(
            invalid,
            gateway.Search,
            gateway_pb2.SearchRequest(collection=name, query="x", filter=struct({"n": {"$lt": bad}})),
        )
    expect(invalid, gateway.Search, gateway_pb2.SearchRequest(collection=name, query="  "))
    expect(invalid, gateway.Search, gateway_pb2.SearchRequest(collection=name, query="x", top_k=101))
    expect(invalid, gateway.ListDocuments, gateway_pb2.ListDocumentsRequest(collection=name, page_size=5000))
    expect(invalid, gateway.ListDocuments, gateway_pb2.ListDocumentsRequest(collection=name, status=99))  # type: ignore[arg-type]
    listed = gateway.ListDocuments(gateway_pb2.ListDocumentsRequest(collection=name))
    assert not listed.documents, "a rejected document must leave nothing behind"
    names = {c.name for c in gateway.ListCollections(gateway_pb2.ListCollectionsRequest(page_size=1000)).collections}
    assert not {"x-model", "x-chunks"} & names


def test_oversized_document_is_resource_exhausted(stack: Stack) -> None:
    from tests.support.stack import serve_gateway

    with serve_gateway(stack.layers, max_document_bytes=1000) as (address, _rest), grpc.insecure_channel(address) as ch:
        gateway = gateway_pb2_grpc.GatewayServiceStub(ch)
        name = new_collection(gateway)
        error = expect(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            gateway.PutDocument,
            gateway_pb2.PutDocumentRequest(collection=name, document_id="big", text="x" * 2000),
        )
        assert "1000" in (error.details() or "")


def test_html_and_markdown_documents(gateway: Stub) -> None:
    name = new_collection(gateway)
    gateway.PutDocument(
        gateway_pb2.PutDocumentRequest(
            collection=name,
            document_id="page",
            data=b"<html><body><h1>Saturn</h1><p>Saturn's rings are ice.</p><script>tracking()</script></body></html>",
            content_type="text/html",
        )
    )
    hits = gateway.Search(gateway_pb2.SearchRequest(collection=name, query="what are Saturn's rings made of")).results
    assert hits[0].document_id == "page"
    assert "tracking" not in " ".join(h.text for h in hits)


def test_ask_without_relevant_chunks_says_so(gateway: Stub) -> None:
    name = new_collection(gateway)
    put(gateway, name, "a", "Tulips bloom in spring in the Netherlands.")
    reply = gateway.Ask(
        gateway_pb2.AskRequest(
            collection=name,
            question="What is the boiling point of mercury?",
            options=gateway_pb2.AskOptions(min_score=0.9),
        )
    )
    assert not reply.found and not reply.sources
    assert "could not find" in reply.answer
    for bad in (float("nan"), float("inf")):  # NaN would silently match no chunk
        error = expect(
            grpc.StatusCode.INVALID_ARGUMENT,
            gateway.Ask,
            gateway_pb2.AskRequest(collection=name, question="Tulips?", options=gateway_pb2.AskOptions(min_score=bad)),
        )
        assert "min_score" in (error.details() or "")
