"""Contract: ListModels, Embed and Tokenize."""

from __future__ import annotations

import math

import grpc
import pytest

from strata.inference.v1 import inference_pb2 as pb

from .helpers import default_model, models, rpc_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_list_models_has_one_default_per_task(stub) -> None:
    listed = models(stub)
    for task in (pb.MODEL_TASK_EMBEDDING, pb.MODEL_TASK_GENERATION, pb.MODEL_TASK_RERANK):
        of_task = [m for m in listed if m.task == task]
        assert of_task, f"no model for task {pb.ModelTask.Name(task)}"
        assert sum(m.is_default for m in of_task) == 1
        for m in of_task:
            assert m.name and m.backend and m.description and m.max_input_tokens > 0
    for m in listed:
        assert (m.dimensions > 0) == (m.task == pb.MODEL_TASK_EMBEDDING)
    assert models(stub) == listed, "order must be stable"


def test_list_models_filters_by_task(stub) -> None:
    only = models(stub, pb.MODEL_TASK_RERANK)
    assert only and all(m.task == pb.MODEL_TASK_RERANK for m in only)
    # A bi-encoder reranker must say how it scores.
    assert any("similarity" in m.description.lower() or "cross-encoder" in m.description.lower() for m in only)


def test_list_models_rejects_unknown_task(stub) -> None:
    rpc_error(lambda: stub.ListModels(pb.ListModelsRequest(task=99)), INVALID)


def test_embed_returns_unit_vectors_in_input_order(stub) -> None:
    model = default_model(stub, pb.MODEL_TASK_EMBEDDING)
    texts = ["A man is eating food.", "", "The girl is carrying a baby.", "A man is eating food."]
    reply = stub.Embed(pb.EmbedRequest(inputs=texts), timeout=60)
    assert reply.model == model.name and reply.dimensions == model.dimensions
    assert len(reply.embeddings) == len(texts)
    for e in reply.embeddings:
        assert len(e.values) == model.dimensions
        assert math.isclose(math.sqrt(dot(e.values, e.values)), 1.0, abs_tol=1e-3)
        assert not e.truncated
    assert dot(reply.embeddings[0].values, reply.embeddings[3].values) > 0.999
    assert reply.usage.input_tokens == sum(e.token_count for e in reply.embeddings)
    assert reply.usage.output_tokens == 0


def test_embed_puts_similar_texts_closer(stub) -> None:
    texts = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    v = [list(e.values) for e in stub.Embed(pb.EmbedRequest(inputs=texts), timeout=60).embeddings]
    assert dot(v[0], v[1]) > dot(v[0], v[2]) + 0.3


def test_embed_by_name_equals_default(stub) -> None:
    model = default_model(stub, pb.MODEL_TASK_EMBEDDING)
    a = stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=60).embeddings[0].values
    b = stub.Embed(pb.EmbedRequest(model=model.name, inputs=["hello"]), timeout=60).embeddings[0].values
    assert dot(list(a), list(b)) > 0.9999


def _too_long(stub) -> str:
    limit = default_model(stub, pb.MODEL_TASK_EMBEDDING).max_input_tokens
    return "word " * (limit * 2)


def test_embed_truncates_long_input_by_default(stub) -> None:
    limit = default_model(stub, pb.MODEL_TASK_EMBEDDING).max_input_tokens
    for mode in (pb.TRUNCATION_UNSPECIFIED, pb.TRUNCATION_END):
        reply = stub.Embed(pb.EmbedRequest(inputs=["short", _too_long(stub)], truncation=mode), timeout=60)
        short, long = reply.embeddings
        assert not short.truncated and long.truncated
        assert 0 < long.token_count <= limit


def test_embed_rejects_long_input_without_truncation(stub) -> None:
    error = rpc_error(
        lambda: stub.Embed(pb.EmbedRequest(inputs=["ok", _too_long(stub)], truncation=pb.TRUNCATION_NONE)), INVALID
    )
    assert "input 1" in error.details()
    # The same short input alone is fine.
    stub.Embed(pb.EmbedRequest(inputs=["ok"], truncation=pb.TRUNCATION_NONE), timeout=60)


@pytest.mark.parametrize(
    ("request_", "code", "needle"),
    [
        (pb.EmbedRequest(inputs=[]), INVALID, "empty"),
        (pb.EmbedRequest(inputs=["a"] * 5000), INVALID, "maximum"),
        (pb.EmbedRequest(model="no-such-model", inputs=["a"]), NOT_FOUND, "no-such-model"),
    ],
    ids=["empty", "too-many", "unknown-model"],
)
def test_embed_bad_input(stub, request_, code, needle) -> None:
    error = rpc_error(lambda: stub.Embed(request_), code)
    assert needle in error.details()


def test_embed_with_a_generation_model_is_invalid(stub) -> None:
    generator = default_model(stub, pb.MODEL_TASK_GENERATION)
    error = rpc_error(lambda: stub.Embed(pb.EmbedRequest(model=generator.name, inputs=["a"])), INVALID)
    assert generator.name in error.details()


def test_tokenize_counts_without_special_tokens(stub) -> None:
    model = default_model(stub, pb.MODEL_TASK_EMBEDDING)
    texts = ["", "hello", "hello world, this is a longer sentence with more tokens", "word " * 1000]
    reply = stub.Tokenize(pb.TokenizeRequest(inputs=texts), timeout=60)
    assert reply.model == model.name
    assert reply.max_input_tokens == model.max_input_tokens
    counts = list(reply.token_counts)
    assert len(counts) == len(texts)
    assert counts[0] == 0 and 0 < counts[1] < counts[2] < counts[3]
    # Not truncated: far past the model's limit.
    assert counts[3] > model.max_input_tokens


def test_tokenize_fits_embed(stub) -> None:
    """A text Tokenize counts within the limit (leaving room for special tokens) embeds untruncated."""
    limit = default_model(stub, pb.MODEL_TASK_EMBEDDING).max_input_tokens
    text = "word " * (limit // 2)
    count = stub.Tokenize(pb.TokenizeRequest(inputs=[text]), timeout=60).token_counts[0]
    assert count <= limit - 2
    reply = stub.Embed(pb.EmbedRequest(inputs=[text], truncation=pb.TRUNCATION_NONE), timeout=60)
    assert not reply.embeddings[0].truncated


def test_tokenize_with_generation_model(stub) -> None:
    generator = default_model(stub, pb.MODEL_TASK_GENERATION)
    reply = stub.Tokenize(pb.TokenizeRequest(model=generator.name, inputs=["hello world"]), timeout=60)
    assert reply.model == generator.name and reply.token_counts[0] > 0
    assert reply.max_input_tokens == generator.max_input_tokens


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (pb.TokenizeRequest(inputs=[]), INVALID),
        (pb.TokenizeRequest(inputs=["a"] * 5000), INVALID),
        (pb.TokenizeRequest(model="no-such-model", inputs=["a"]), NOT_FOUND),
    ],
    ids=["empty", "too-many", "unknown-model"],
)
def test_tokenize_bad_input(stub, request_, code) -> None:
    rpc_error(lambda: stub.Tokenize(request_), code)
