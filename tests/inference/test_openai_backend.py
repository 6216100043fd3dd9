"""The openai backend against a real OpenAI-compatible HTTP server on loopback."""

from __future__ import annotations

import time

import grpc
import pytest

from strata.inference.v1 import inference_pb2 as pb
from tests.inference.conftest import openai_settings
from tests.support.servers import wait_serving

QUESTION = [pb.Message(role=pb.ROLE_USER, content="Say hello.")]
SHORT = pb.GenerationOptions(max_tokens=8, temperature=0)


def rate_limited(retry_after: str | None = "0") -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return 429, headers, {"error": {"message": "slow down", "type": "rate_limit"}}


def test_requests_use_upstream_model_names_and_api_key(upstream, serve, tmp_path) -> None:
    upstream.script.api_key = "sk-test"
    with serve(openai_settings(upstream, tmp_path, openai_api_key="sk-test")) as (stub, _):
        reply = stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
        assert reply.model == "all-MiniLM-L6-v2"
        generated = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=SHORT), timeout=60)
        assert generated.text
    posted = [r for r in upstream.requests if r.body is not None]
    assert {r.body["model"] for r in posted} == {"text-embedding-fake", "chat-fake"}
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in upstream.requests)


def test_a_429_storm_is_retried_until_it_passes(upstream, serve, tmp_path) -> None:
    upstream.script.failures = [rate_limited() for _ in range(3)]
    with serve(openai_settings(upstream, tmp_path, openai_max_retries=3)) as (stub, _):
        reply = stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
    assert len(reply.embeddings) == 1
    assert upstream.count("/embeddings") == 4


def test_a_429_storm_longer_than_the_retries_is_resource_exhausted(upstream, serve, tmp_path) -> None:
    upstream.script.failures = [rate_limited() for _ in range(10)]
    with serve(openai_settings(upstream, tmp_path, openai_max_retries=2)) as (stub, _):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(messages=QUESTION, options=SHORT), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "429" in caught.value.details()
    assert upstream.count("/chat/completions") == 3


def test_retry_after_is_honoured(upstream, serve, tmp_path) -> None:
    upstream.script.failures = [rate_limited("1")]
    with serve(openai_settings(upstream, tmp_path)) as (stub, _):
        stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
    first, second = [r.at for r in upstream.requests if r.path.endswith("/embeddings")]
    assert second - first >= 0.95


def test_5xx_is_retried_then_unavailable(upstream, serve, tmp_path) -> None:
    upstream.script.failures = [(503, {}, {"error": {"message": "overloaded"}})] * 5
    with serve(openai_settings(upstream, tmp_path, openai_max_retries=1)) as (stub, _):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in caught.value.details()
    assert upstream.count("/embeddings") == 2


@pytest.mark.parametrize(
    ("key", "code"),
    [("wrong", grpc.StatusCode.UNAUTHENTICATED), ("sk-readonly", grpc.StatusCode.PERMISSION_DENIED)],
)
def test_auth_failures_are_not_retried(upstream, serve, tmp_path, key, code) -> None:
    upstream.script.api_key = "sk-test"
    upstream.script.forbidden_key = "sk-readonly"
    with serve(openai_settings(upstream, tmp_path, openai_api_key=key)) as (stub, _):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
    assert caught.value.code() == code
    assert upstream.count("/embeddings") == 1


def test_upstream_400_is_invalid_argument(upstream, serve, tmp_path) -> None:
    upstream.script.failures = [(400, {}, {"error": {"message": "context length exceeded"}})]
    with serve(openai_settings(upstream, tmp_path)) as (stub, _):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(messages=QUESTION, options=SHORT), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context length exceeded" in caught.value.details()


def test_a_slow_upstream_is_deadline_exceeded(upstream, serve, tmp_path) -> None:
    upstream.script.delay = 2.0
    with serve(openai_settings(upstream, tmp_path, openai_timeout_seconds=0.3)) as (stub, _):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_stream_cut_midway_ends_with_unavailable(upstream, serve, tmp_path) -> None:
    upstream.script.cut_stream_after = 2
    options = pb.GenerationOptions(max_tokens=16, temperature=0)
    with serve(openai_settings(upstream, tmp_path)) as (stub, _):
        received = []
        with pytest.raises(grpc.RpcError) as caught:
            for event in stub.GenerateStream(pb.GenerateStreamRequest(messages=QUESTION, options=options), timeout=60):
                received.append(event)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [e.WhichOneof("event") for e in received] == ["delta", "delta"]
        # Not retried: the client already has part of the answer.
        assert upstream.count("/chat/completions") == 1
        # The next call works.
        assert stub.Generate(pb.GenerateRequest(messages=QUESTION, options=SHORT), timeout=60).text


def test_an_unreachable_upstream_is_unavailable_and_not_serving(serve, tmp_path) -> None:
    from tests.support.servers import free_port

    settings = openai_settings_for_url(f"http://127.0.0.1:{free_port()}/v1", tmp_path)
    with serve(settings) as (stub, address):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Embed(pb.EmbedRequest(inputs=["hello"]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(TimeoutError):
            wait_serving(address, timeout=1.0)


def openai_settings_for_url(url: str, tmp_path):
    from services.inference.config import InferenceSettings

    return InferenceSettings(
        data_dir=tmp_path,
        backend="openai",
        openai_base_url=url,
        openai_max_retries=1,
        openai_backoff_seconds=0.01,
    )


def test_health_follows_the_upstream(upstream, serve, tmp_path) -> None:
    with serve(openai_settings(upstream, tmp_path)) as (_stub, address):
        wait_serving(address, timeout=10)
        upstream.script.down = True
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                wait_serving(address, timeout=0.3)
            except TimeoutError:
                break
        else:
            pytest.fail("health stayed SERVING while the upstream failed")
        upstream.script.down = False
        wait_serving(address, timeout=10)
