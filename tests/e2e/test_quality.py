"""Retrieval quality with the default local embedding model: recall@5 >= 0.9 on a 40-document corpus."""

from __future__ import annotations

import json
from pathlib import Path

from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc

CORPUS = Path(__file__).parent / "corpus"


def test_search_recall_at_5(gateway: gateway_pb2_grpc.GatewayServiceStub) -> None:
    gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name="quality-corpus"))
    documents = sorted((CORPUS / "docs").glob("*.md"))
    assert len(documents) == 40
    for path in documents:
        gateway.PutDocument(
            gateway_pb2.PutDocumentRequest(
                collection="quality-corpus", document_id=path.stem, text=path.read_text(), content_type="text/markdown"
            ),
            timeout=120,
        )
    questions = json.loads((CORPUS / "questions.json").read_text())
    assert len(questions) == 25
    misses = []
    for item in questions:
        results = gateway.Search(
            gateway_pb2.SearchRequest(collection="quality-corpus", query=item["question"], top_k=5)
        ).results
        if item["document"] not in {r.document_id for r in results}:
            misses.append((item["question"], [r.document_id for r in results]))
    recall = 1 - len(misses) / len(questions)
    assert recall >= 0.9, f"recall@5 = {recall:.2f}; misses: {misses}"
