"""Ingest across layers: stop each layer in the middle of an ingest; afterwards every layer agrees.

"Agrees" means: a READY document has exactly its chunk_count vectors (all of its current
generation) and exactly one stored object; a FAILED one has no vectors and no bytes left once
the gateway's janitor has run; search never returns chunks of a version that is not committed.
A failed replacement keeps the previous, acknowledged version serving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2

from gateway import naming
from strata.blob.v1 import blob_pb2, blob_pb2_grpc
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from strata.vector.v1 import vector_pb2, vector_pb2_grpc
from tests.support.servers import wait_serving
from tests.support.stack import LAYERS, LayerProcess, serve_gateway

BUCKET = "strata-documents"


@pytest.fixture(scope="module")
def layers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LayerProcess]]:
    data_dir = tmp_path_factory.mktemp("consistency")
    running = {name: LayerProcess(name, data_dir).start() for name in LAYERS}
    yield running
    for layer in running.values():
        layer.stop()


def long_document(words: int = 9000) -> str:
    sentences = [
        f"Sentence {i} describes the tide pools of the northern coast and the creatures that shelter there."
        for i in range(words // 15)
    ]
    return "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, len(sentences), 5))


def layer_view(layers: dict[str, LayerProcess], collection: str, document_id: str) -> tuple[int, set[int], int]:
    """(vector count, generations seen, stored objects) for one document, read from the layers themselves."""
    key = naming.document_key(document_id)
    with grpc.insecure_channel(layers["vector"].address) as channel:
        stub = vector_pb2_grpc.VectorServiceStub(channel)
        filter_ = struct_pb2.Struct()
        filter_.update({naming.DOC_KEY: key})
        vectors, token = [], ""
        while True:
            page = stub.ListVectors(
                vector_pb2.ListVectorsRequest(
                    index_name=collection, filter=filter_, page_size=1000, page_token=token, return_metadata=True
                )
            )
            vectors += list(page.vectors)
            token = page.next_page_token
            if not token:
                break
    generations = {int(v.metadata[naming.GENERATION_KEY]) for v in vectors}
    with grpc.insecure_channel(layers["blob"].address) as channel:
        objects = blob_pb2_grpc.BlobServiceStub(channel).ListObjects(
            blob_pb2.ListObjectsRequest(bucket=BUCKET, prefix=f"{collection}/{key}/")
        )
    return len(vectors), generations, len(objects.objects)


@pytest.mark.parametrize("victim", ["inference", "vector", "metadata", "blob"])
def test_layer_stopped_mid_ingest_leaves_layers_agreeing(layers: dict[str, LayerProcess], victim: str) -> None:
    addresses = {name: layer.address for name, layer in layers.items()}
    collection = f"consistency-{victim}"
    with serve_gateway(addresses, janitor_seconds=0.2, upstream_timeout_seconds=5) as (address, _rest):
        with grpc.insecure_channel(address) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=collection))
            # A first version that is READY, so a failed replacement must not mix with it.
            gateway.PutDocument(
                gateway_pb2.PutDocumentRequest(collection=collection, document_id="doc", text="Version one is short.")
            )
            outcome: dict[str, object] = {}

            def ingest() -> None:
                try:
                    outcome["reply"] = gateway.PutDocument(
                        gateway_pb2.PutDocumentRequest(collection=collection, document_id="doc", text=long_document()),
                        timeout=120,
                    )
                except grpc.RpcError as exc:
                    outcome["error"] = exc

            worker = threading.Thread(target=ingest)
            worker.start()
            time.sleep(0.7)  # the ingest is chunking and embedding a ~600-chunk document
            layers[victim].stop()
            worker.join(150)
            assert not worker.is_alive()
            time.sleep(0.5)
            layers[victim].start()
            wait_serving(address, 30)  # the gateway is SERVING again once all four layers are

            if "error" in outcome:
                error = outcome["error"]
                assert isinstance(error, grpc.RpcError)
                assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error

            # Once the layer is back, the janitor finishes any cleanup the outage interrupted.
            deadline = time.monotonic() + 60
            while True:
                doc = gateway.GetDocument(
                    gateway_pb2.GetDocumentRequest(collection=collection, document="doc"), timeout=10
                ).document
                vectors, generations, objects = layer_view(layers, collection, "doc")
                if doc.status == gateway_pb2.DOCUMENT_STATUS_READY:
                    # Read before the layers, so a janitor pass in between shows up on the next round.
                    explained = "error" not in outcome or bool(doc.error)
                    settled = vectors == doc.chunk_count and len(generations) == 1 and objects == 1 and explained
                else:
                    settled = vectors == 0 and objects == 0
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert doc.status in (gateway_pb2.DOCUMENT_STATUS_READY, gateway_pb2.DOCUMENT_STATUS_FAILED)
            if doc.status == gateway_pb2.DOCUMENT_STATUS_READY:
                if "error" in outcome:
                    # The failed replacement left the acknowledged first version serving, and says why.
                    assert doc.chunk_count == 1 and doc.error
                    hits = gateway.Search(gateway_pb2.SearchRequest(collection=collection, query="tide pools")).results
                    assert all("tide" not in hit.text for hit in hits)
                assert (vectors, len(generations), objects) == (doc.chunk_count, 1, 1)
            else:
                assert doc.error
                assert (vectors, objects) == (0, 0), f"leftovers after a failed ingest with {victim} down"
                hits = gateway.Search(gateway_pb2.SearchRequest(collection=collection, query="tide pools")).results
                assert all(hit.document_id != "doc" for hit in hits)
            # Retrying the put after the outage works and ends READY.
            retried = gateway.PutDocument(
                gateway_pb2.PutDocumentRequest(collection=collection, document_id="doc", text="Version three."),
                timeout=60,
            ).document
            assert retried.status == gateway_pb2.DOCUMENT_STATUS_READY
            vectors, generations, objects = layer_view(layers, collection, "doc")
            assert (vectors, len(generations), objects) == (retried.chunk_count, 1, 1)


def test_gateway_restart_cleans_up_an_interrupted_ingest(layers: dict[str, LayerProcess], tmp_path: Path) -> None:
    """A gateway killed mid-ingest leaves a PENDING row; the next gateway fails it and removes its writes."""
    addresses = {name: layer.address for name, layer in layers.items()}
    collection = "consistency-gateway"
    with serve_gateway(addresses) as (address, _rest), grpc.insecure_channel(address) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name=collection))
        future = gateway.PutDocument.future(
            gateway_pb2.PutDocumentRequest(collection=collection, document_id="cut", text=long_document())
        )
        time.sleep(0.7)
    # The gateway stopped with the ingest in flight (grace 1 s, far shorter than the ingest).
    with pytest.raises(grpc.RpcError):
        future.result(timeout=30)
    with serve_gateway(addresses, janitor_seconds=0.2) as (address, _rest), grpc.insecure_channel(address) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        deadline = time.monotonic() + 30
        while True:
            doc = gateway.GetDocument(gateway_pb2.GetDocumentRequest(collection=collection, document="cut")).document
            vectors, _generations, objects = layer_view(layers, collection, "cut")
            if (doc.status, vectors, objects) == (gateway_pb2.DOCUMENT_STATUS_FAILED, 0, 0):
                break
            assert time.monotonic() < deadline, (doc.status, vectors, objects)
            time.sleep(0.2)
        assert doc.error
