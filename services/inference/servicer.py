"""gRPC adapter: protobuf in, core call, protobuf out. No logic lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from services.inference.core import InferenceCore
from services.inference.domain import ChatMessage, Done, FinishReason, ModelInfo, Role, SamplingOptions, Task
from services.runtime.errors import InvalidArgument
from strata.inference.v1 import inference_pb2 as pb
from strata.inference.v1 import inference_pb2_grpc

_TASK_TO_PB = {
    Task.EMBEDDING: pb.MODEL_TASK_EMBEDDING,
    Task.GENERATION: pb.MODEL_TASK_GENERATION,
    Task.RERANK: pb.MODEL_TASK_RERANK,
}
_TASK_FROM_PB: dict[int, Task] = {int(value): key for key, value in _TASK_TO_PB.items()}
_ROLE_FROM_PB: dict[int, Role] = {
    pb.ROLE_SYSTEM: Role.SYSTEM,
    pb.ROLE_USER: Role.USER,
    pb.ROLE_ASSISTANT: Role.ASSISTANT,
}
_FINISH_TO_PB = {FinishReason.STOP: pb.FINISH_REASON_STOP, FinishReason.LENGTH: pb.FINISH_REASON_LENGTH}
_KNOWN_TRUNCATION = (pb.TRUNCATION_UNSPECIFIED, pb.TRUNCATION_END, pb.TRUNCATION_NONE)


def _task(value: int) -> Task | None:
    if value == pb.MODEL_TASK_UNSPECIFIED:
        return None
    if value not in _TASK_FROM_PB:
        raise InvalidArgument(f"unknown task value {value}", reason="INVALID_TASK")
    return _TASK_FROM_PB[value]


def _model(info: ModelInfo) -> pb.Model:
    return pb.Model(
        name=info.name,
        task=_TASK_TO_PB[info.task],
        dimensions=info.dimensions,
        max_input_tokens=info.max_input_tokens,
        backend=info.backend,
        description=info.description,
        is_default=info.is_default,
    )


def _chat(request: Any) -> tuple[list[ChatMessage], SamplingOptions]:
    messages = [ChatMessage(role=_ROLE_FROM_PB.get(m.role), content=m.content) for m in request.messages]
    o = request.options
    options = SamplingOptions(
        max_tokens=o.max_tokens,
        temperature=o.temperature if o.HasField("temperature") else None,
        top_p=o.top_p if o.HasField("top_p") else None,
        stop=tuple(o.stop),
        seed=o.seed if o.HasField("seed") else None,
    )
    return messages, options


def _usage(done: Done | None) -> pb.Usage:
    if done is None:
        return pb.Usage()
    return pb.Usage(input_tokens=done.input_tokens, output_tokens=done.output_tokens)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> Any:
        return pb.ListModelsResponse(models=[_model(m) for m in self.core.models(_task(request.task))])

    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> Any:
        if request.truncation not in _KNOWN_TRUNCATION:
            raise InvalidArgument(f"unknown truncation value {request.truncation}", reason="INVALID_TRUNCATION")
        model, embeddings = await self.core.embed(
            request.model, list(request.inputs), reject_over_limit=request.truncation == pb.TRUNCATION_NONE
        )
        return pb.EmbedResponse(
            model=model.name,
            dimensions=model.dimensions,
            embeddings=[
                pb.Embedding(values=e.values, token_count=e.token_count, truncated=e.truncated) for e in embeddings
            ],
            usage=pb.Usage(input_tokens=sum(e.token_count for e in embeddings)),
        )

    async def Tokenize(self, request: pb.TokenizeRequest, context: grpc.aio.ServicerContext) -> Any:
        model, counts = await self.core.tokenize(request.model, list(request.inputs))
        return pb.TokenizeResponse(model=model.name, token_counts=counts, max_input_tokens=model.max_input_tokens)

    async def Rerank(self, request: pb.RerankRequest, context: grpc.aio.ServicerContext) -> Any:
        model, ranked, tokens = await self.core.rerank(
            request.model, request.query, list(request.documents), request.top_n
        )
        return pb.RerankResponse(
            model=model.name,
            results=[pb.RerankResult(index=i, score=s) for i, s in ranked],
            usage=pb.Usage(input_tokens=tokens),
        )

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext) -> Any:
        messages, options = _chat(request)
        result = await self.core.generate(request.model, messages, options)
        return pb.GenerateResponse(
            model=result.model,
            text=result.text,
            finish_reason=_FINISH_TO_PB[result.done.finish_reason] if result.done else pb.FINISH_REASON_UNSPECIFIED,
            usage=_usage(result.done),
        )

    async def GenerateStream(
        self, request: pb.GenerateStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.GenerateStreamResponse]:
        messages, options = _chat(request)
        model, events = await self.core.generate_stream(request.model, messages, options)
        try:
            async for event in events:
                if isinstance(event, Done):
                    done = pb.GenerateDone(
                        model=model.name, finish_reason=_FINISH_TO_PB[event.finish_reason], usage=_usage(event)
                    )
                    yield pb.GenerateStreamResponse(done=done)
                else:
                    yield pb.GenerateStreamResponse(delta=event.text)
        finally:
            await events.aclose()  # type: ignore[attr-defined]
