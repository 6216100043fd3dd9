"""The local backend: queueing, cancellation, responsiveness and micro-batching through a real server."""

from __future__ import annotations

import concurrent.futures
import math
import queue
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.inference.config import InferenceSettings
from strata.inference.v1 import inference_pb2 as pb

STORY = [pb.Message(role=pb.ROLE_USER, content="Write a very long story about a lighthouse keeper.")]
LONG = pb.GenerationOptions(max_tokens=1500, temperature=0.8, seed=7)


def start_stream(stub):
    call = stub.GenerateStream(pb.GenerateStreamRequest(messages=STORY, options=LONG), timeout=120)
    first = next(call)
    assert first.WhichOneof("event") == "delta"
    return call


def test_queue_depth_zero_rejects_while_one_runs(serve, tmp_path) -> None:
    settings = InferenceSettings(data_dir=tmp_path, generation_queue_depth=0)
    with serve(settings) as (stub, _):
        running = start_stream(stub)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(messages=STORY, options=pb.GenerationOptions(max_tokens=2)), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue is full" in caught.value.details()
        running.cancel()
        # Once the running generation is gone there is room again.
        reply = stub.Generate(
            pb.GenerateRequest(messages=STORY, options=pb.GenerationOptions(max_tokens=2)), timeout=60
        )
        assert reply.usage.output_tokens == 2


def test_one_waits_and_the_next_is_rejected_with_depth_one(serve, tmp_path) -> None:
    settings = InferenceSettings(data_dir=tmp_path, generation_queue_depth=1)
    short = pb.GenerateRequest(messages=STORY, options=pb.GenerationOptions(max_tokens=2))
    with serve(settings) as (stub, _):
        running = start_stream(stub)
        finished: queue.Queue[grpc.Future] = queue.Queue()
        calls = [stub.Generate.future(short, timeout=120) for _ in range(2)]
        for call in calls:
            call.add_done_callback(finished.put)
        rejected = finished.get(timeout=30)
        assert rejected.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert finished.empty(), "the other call should wait behind the running one"
        running.cancel()
        waiting = next(c for c in calls if c is not rejected)
        assert waiting.result(timeout=60).usage.output_tokens == 2


def test_cancelling_a_stream_stops_generation_at_once(local_stub) -> None:
    one_token = pb.GenerateRequest(messages=STORY, options=pb.GenerationOptions(max_tokens=1))
    started = time.monotonic()
    local_stub.Generate(one_token)
    alone = time.monotonic() - started
    call = start_stream(local_stub)
    call.cancel()
    started = time.monotonic()
    # The model runs one generation at a time, so this call waits for the cancelled one
    # to stop; had it not stopped, it would wait for up to 1500 more tokens.
    reply = local_stub.Generate(one_token)
    assert reply.usage.output_tokens == 1
    assert time.monotonic() - started < alone + 3.0


def test_health_answers_quickly_while_generating(local_server, local_stub) -> None:
    call = start_stream(local_stub)
    try:
        with grpc.insecure_channel(local_server) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            latencies = []
            for _ in range(10):
                started = time.monotonic()
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                latencies.append(time.monotonic() - started)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # A blocked event loop would show as whole seconds, the length of the generation.
        assert sorted(latencies)[len(latencies) // 2] < 0.25
    finally:
        call.cancel()


def test_concurrent_embeds_match_single_embeds(local_stub) -> None:
    texts = [f"Sentence number {i} talks about topic {i % 5}." for i in range(24)]
    alone = [list(local_stub.Embed(pb.EmbedRequest(inputs=[t])).embeddings[0].values) for t in texts[:4]]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        together = list(pool.map(lambda t: local_stub.Embed(pb.EmbedRequest(inputs=[t])), texts))
    for i, vector in enumerate(alone):
        merged = together[i].embeddings[0].values
        # int8 dynamic quantisation scales per batch, so vectors differ in the last digits only.
        assert sum(a * b for a, b in zip(vector, merged, strict=True)) > 0.995
    for reply in together:
        assert math.isclose(sum(v * v for v in reply.embeddings[0].values), 1.0, abs_tol=1e-3)


def test_tokenize_matches_embed_token_counts(local_stub) -> None:
    texts = ["hello world", "Strata composes inference, vectors, SQL and blobs."]
    counts = local_stub.Tokenize(pb.TokenizeRequest(inputs=texts)).token_counts
    embedded = local_stub.Embed(pb.EmbedRequest(inputs=texts)).embeddings
    # Embed counts what the model read: the text plus [CLS] and [SEP].
    assert [e.token_count for e in embedded] == [c + 2 for c in counts]


def test_unbatched_server_gives_the_same_vectors(serve, tmp_path, local_stub) -> None:
    settings = InferenceSettings(data_dir=tmp_path, batch_max_size=1)
    with serve(settings) as (stub, _):
        a = stub.Embed(pb.EmbedRequest(inputs=["same text"])).embeddings[0].values
    b = local_stub.Embed(pb.EmbedRequest(inputs=["same text"])).embeddings[0].values
    assert sum(x * y for x, y in zip(a, b, strict=True)) > 0.9999


@pytest.mark.parametrize("max_tokens", [1, 5])
def test_output_tokens_never_exceed_max_tokens(local_stub, max_tokens) -> None:
    reply = local_stub.Generate(
        pb.GenerateRequest(messages=STORY, options=pb.GenerationOptions(max_tokens=max_tokens, temperature=1.0))
    )
    assert reply.usage.output_tokens == max_tokens
    assert reply.finish_reason == pb.FINISH_REASON_LENGTH


def test_a_prompt_longer_than_the_context_is_invalid(serve, tmp_path) -> None:
    settings = InferenceSettings(data_dir=tmp_path, context_tokens=256)
    with serve(settings) as (stub, _):
        message = pb.Message(role=pb.ROLE_USER, content="word " * 400)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Generate(pb.GenerateRequest(messages=[message]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context" in caught.value.details()
