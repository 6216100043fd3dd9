"""Contract: Generate and GenerateStream."""

from __future__ import annotations

import grpc
import pytest

from strata.inference.v1 import inference_pb2 as pb

from .helpers import default_model, rpc_error, user

INVALID = grpc.StatusCode.INVALID_ARGUMENT
QUESTION = [
    pb.Message(role=pb.ROLE_SYSTEM, content="You are a helpful assistant."),
    user("Name three colours of the rainbow."),
]


def options(**kwargs) -> pb.GenerationOptions:
    kwargs.setdefault("max_tokens", 16)
    return pb.GenerationOptions(**kwargs)


def test_generate_answers_with_usage(stub) -> None:
    model = default_model(stub, pb.MODEL_TASK_GENERATION)
    reply = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=options(temperature=0)), timeout=120)
    assert reply.model == model.name
    assert reply.text.strip()
    assert reply.finish_reason in (pb.FINISH_REASON_STOP, pb.FINISH_REASON_LENGTH)
    assert reply.usage.input_tokens > 0
    assert 0 < reply.usage.output_tokens <= 16


def test_generate_honours_max_tokens(stub) -> None:
    reply = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=options(max_tokens=2)), timeout=120)
    assert reply.usage.output_tokens <= 2
    assert reply.finish_reason == pb.FINISH_REASON_LENGTH


def test_generate_is_reproducible_with_a_seed(stub) -> None:
    sampled = options(temperature=1.0, top_p=1.0, seed=1234, max_tokens=12)
    first = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=sampled), timeout=120).text
    second = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=sampled), timeout=120).text
    assert first == second


def test_generate_stops_before_a_stop_sequence(stub) -> None:
    greedy = options(temperature=0, max_tokens=24)
    full = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=greedy), timeout=120).text
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    expected = full[: full.index(stop)]
    stopped = stub.Generate(
        pb.GenerateRequest(messages=QUESTION, options=options(temperature=0, max_tokens=24, stop=[stop])), timeout=120
    )
    assert stopped.text == expected
    assert stopped.finish_reason == pb.FINISH_REASON_STOP


def test_stream_sends_deltas_then_one_done(stub) -> None:
    greedy = options(temperature=0, max_tokens=12)
    whole = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=greedy), timeout=120)
    events = list(stub.GenerateStream(pb.GenerateStreamRequest(messages=QUESTION, options=greedy), timeout=120))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert len(kinds) >= 2
    assert "".join(e.delta for e in events[:-1]) == whole.text
    done = events[-1].done
    assert done.model == whole.model
    assert done.finish_reason == whole.finish_reason
    assert done.usage == whole.usage


def test_stream_can_be_cancelled(stub) -> None:
    call = stub.GenerateStream(
        pb.GenerateStreamRequest(messages=[user("Write a long story.")], options=options(max_tokens=2000)), timeout=120
    )
    first = next(call)
    assert first.WhichOneof("event") == "delta"
    call.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    # The server is free again: a short generation completes.
    reply = stub.Generate(pb.GenerateRequest(messages=QUESTION, options=options(max_tokens=2)), timeout=60)
    assert reply.usage.output_tokens <= 2


BAD_REQUESTS = {
    "empty-messages": pb.GenerateRequest(messages=[]),
    "unspecified-role": pb.GenerateRequest(messages=[pb.Message(content="hi")]),
    "unknown-role": pb.GenerateRequest(messages=[pb.Message(role=42, content="hi")]),
    "negative-max-tokens": pb.GenerateRequest(messages=[user("hi")], options=pb.GenerationOptions(max_tokens=-1)),
    "temperature-too-high": pb.GenerateRequest(messages=[user("hi")], options=pb.GenerationOptions(temperature=2.5)),
    "top-p-zero": pb.GenerateRequest(messages=[user("hi")], options=pb.GenerationOptions(top_p=0)),
    "five-stops": pb.GenerateRequest(messages=[user("hi")], options=pb.GenerationOptions(stop=list("abcde"))),
    "empty-stop": pb.GenerateRequest(messages=[user("hi")], options=pb.GenerationOptions(stop=[""])),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_generate_bad_input(stub, name) -> None:
    request = BAD_REQUESTS[name]
    rpc_error(lambda: stub.Generate(request), INVALID)
    stream_request = pb.GenerateStreamRequest(messages=request.messages, options=request.options)
    rpc_error(lambda: list(stub.GenerateStream(stream_request)), INVALID)


def test_generate_unknown_model(stub) -> None:
    rpc_error(
        lambda: stub.Generate(pb.GenerateRequest(model="no-such-model", messages=[user("hi")])),
        grpc.StatusCode.NOT_FOUND,
    )


def test_generate_with_an_embedding_model_is_invalid(stub) -> None:
    embedder = default_model(stub, pb.MODEL_TASK_EMBEDDING)
    rpc_error(lambda: stub.Generate(pb.GenerateRequest(model=embedder.name, messages=[user("hi")])), INVALID)
