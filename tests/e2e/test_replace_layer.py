"""Replace one layer, proven: the same gateway, unchanged, gives the same results whether a layer
runs on its embedded default or on the scale-out engine behind the same contract."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.support.backends import missing_backend
from tests.support.stack import run_stack

CORPUS = Path(__file__).parent / "corpus"
DOCUMENTS = sorted((CORPUS / "docs").glob("*.md"))[:12]
QUESTIONS = [q["question"] for q in json.loads((CORPUS / "questions.json").read_text())][:8]


def exercise(gateway_address: str) -> dict[str, Any]:
    """Ingest, search, list, delete: what a user sees, in a comparable form."""
    with grpc.insecure_channel(gateway_address) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name="swap"))
        for path in DOCUMENTS:
            gateway.PutDocument(
                gateway_pb2.PutDocumentRequest(
                    collection="swap", document_id=path.stem, text=path.read_text(), content_type="text/markdown"
                ),
                timeout=120,
            )
        gateway.DeleteDocument(gateway_pb2.DeleteDocumentRequest(collection="swap", document=DOCUMENTS[0].stem))
        searches = []
        for question in QUESTIONS:
            results = gateway.Search(gateway_pb2.SearchRequest(collection="swap", query=question, top_k=5)).results
            searches.append([(r.document_id, r.chunk_index, r.text, round(r.score, 4)) for r in results])
        listed = gateway.ListDocuments(gateway_pb2.ListDocumentsRequest(collection="swap")).documents
        collection = gateway.GetCollection(gateway_pb2.GetCollectionRequest(name="swap")).collection
        return {
            "searches": searches,
            "documents": [(d.id, d.status, d.chunk_count, d.etag, d.size_bytes) for d in listed],
            "counts": (collection.document_count, collection.chunk_count),
        }


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    with run_stack(tmp_path_factory.mktemp("baseline")) as stack:
        return exercise(stack.gateway)


def milvus() -> Iterator[dict[str, Any]]:
    import tempfile

    from tests.contract.vector.milvus_server import milvus_lite

    try:
        with milvus_lite(Path(tempfile.mkdtemp(prefix="swap-milvus-"))) as uri:
            yield {"backend": "milvus", "milvus_uri": uri}
    except (FileNotFoundError, RuntimeError) as exc:
        missing_backend(f"Milvus Lite unavailable: {exc}")


def postgres() -> Iterator[dict[str, Any]]:
    from tests.metadata.postgres_server import PostgresUnavailable, shared_postgres

    try:
        dsn = shared_postgres().new_database("swap")
    except PostgresUnavailable as exc:
        missing_backend(str(exc))
    yield {"backend": "postgres", "postgres_dsn": dsn}


def s3() -> Iterator[dict[str, Any]]:
    from tests.blob.s3_servers import ACCESS_KEY, SECRET_KEY, _endpoint

    endpoint = _endpoint("moto")
    yield {
        "backend": "s3",
        "s3_endpoint": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": ACCESS_KEY,
        "s3_secret_access_key": SECRET_KEY,
        "s3_bucket_prefix": "swap-",
    }


SWAPS: dict[str, tuple[str, Callable[[], Iterator[dict[str, Any]]]]] = {
    "vector-on-milvus": ("vector", milvus),
    "metadata-on-postgres": ("metadata", postgres),
    "blob-on-s3": ("blob", s3),
}


@pytest.mark.parametrize("swap", list(SWAPS))
def test_gateway_results_are_the_same_after_replacing_a_layer(
    swap: str, baseline: dict[str, Any], tmp_path: Path
) -> None:
    layer, engine = SWAPS[swap]
    settings_source = engine()
    overrides = next(settings_source)
    try:
        with run_stack(tmp_path, per_layer={layer: overrides}) as stack:
            swapped = exercise(stack.gateway)
    finally:
        settings_source.close()
    assert swapped["documents"] == baseline["documents"]
    assert swapped["counts"] == baseline["counts"]
    for got, expected in zip(swapped["searches"], baseline["searches"], strict=True):
        assert [hit[:3] for hit in got] == [hit[:3] for hit in expected]
        assert [hit[3] for hit in got] == pytest.approx([hit[3] for hit in expected], abs=1e-3)
