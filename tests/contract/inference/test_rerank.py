"""Contract: Rerank."""

from __future__ import annotations

import grpc
import pytest

from strata.inference.v1 import inference_pb2 as pb

from .helpers import default_model, rpc_error

DOCUMENTS = [
    "The Eiffel Tower is in Paris.",
    "Photosynthesis turns light into chemical energy in plants.",
    "Bananas are rich in potassium.",
    "Plants use sunlight, water and carbon dioxide to make glucose.",
]


def test_rerank_orders_by_relevance(stub) -> None:
    model = default_model(stub, pb.MODEL_TASK_RERANK)
    reply = stub.Rerank(pb.RerankRequest(query="How do plants make food from light?", documents=DOCUMENTS), timeout=60)
    assert reply.model == model.name
    indexes = [r.index for r in reply.results]
    assert sorted(indexes) == list(range(len(DOCUMENTS)))
    assert set(indexes[:2]) == {1, 3}
    scores = [r.score for r in reply.results]
    assert scores == sorted(scores, reverse=True)
    assert reply.usage.input_tokens > 0


def test_rerank_top_n(stub) -> None:
    full = stub.Rerank(pb.RerankRequest(query="Paris landmarks", documents=DOCUMENTS), timeout=60).results
    top = stub.Rerank(pb.RerankRequest(query="Paris landmarks", documents=DOCUMENTS, top_n=2), timeout=60).results
    assert [r.index for r in top] == [r.index for r in full[:2]]
    assert top[0].index == 0


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.RerankRequest(query="", documents=["a"]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.RerankRequest(query="q", documents=[]), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.RerankRequest(query="q", documents=["a"] * 5000), grpc.StatusCode.INVALID_ARGUMENT),
        (pb.RerankRequest(model="no-such-model", query="q", documents=["a"]), grpc.StatusCode.NOT_FOUND),
    ],
    ids=["empty-query", "no-documents", "too-many-documents", "unknown-model"],
)
def test_rerank_bad_input(stub, request_, code) -> None:
    rpc_error(lambda: stub.Rerank(request_), code)


def test_rerank_with_an_embedding_model_is_invalid(stub) -> None:
    embedder = default_model(stub, pb.MODEL_TASK_EMBEDDING)
    rpc_error(
        lambda: stub.Rerank(pb.RerankRequest(model=embedder.name, query="q", documents=["a"])),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
