"""Search and Ask: retrieve chunks of READY documents, then answer from them with citations.

Search is one round trip to each layer: Embed (query) -> Query (vectors) ->
one batched SQL lookup that keeps only chunks of READY documents at their
current generation.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2

from gateway import naming
from gateway.collections import Collections, call_index
from gateway.deps import Deps
from gateway.upstreams import UpstreamError
from services.runtime.errors import InvalidArgument
from strata.inference.v1 import inference_pb2
from strata.vector.v1 import vector_pb2

SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources below. Cite the sources you use as [1], [2]. "
    "If the sources do not contain the answer, say that you could not find it. Be brief."
)
NOT_FOUND_ANSWER = "I could not find anything about that in the collection {name!r}."
_CITATION = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Hit:
    document_id: str
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, Any]


@dataclass
class AskPlan:
    collection: str
    sources: list[Hit]
    messages: list[inference_pb2.Message]
    found: bool


class Retrieval:
    def __init__(self, deps: Deps, collections: Collections) -> None:
        self.deps = deps
        self.collections = collections

    async def search(self, collection: str, query: str, top_k: int, filter_: struct_pb2.Struct | None) -> list[Hit]:
        if not query.strip():
            raise InvalidArgument("query must not be empty", reason="EMPTY_QUERY")
        top_k = top_k or 5
        if not 1 <= top_k <= 100:
            raise InvalidArgument(f"top_k {top_k} is outside 1..100", reason="BAD_TOP_K")
        if filter_ is not None:
            naming.check_filter(naming.user_dict(filter_, "the filter", "INVALID_FILTER"))
        record = await self.collections.require(collection)
        up = self.deps.upstreams
        embedded = await up.inference.call(
            "Embed", inference_pb2.EmbedRequest(model=record.embedding_model, inputs=[query])
        )
        # Over-fetch a little: chunks of a version being replaced are in the index but not visible.
        fetch = min(100, top_k * 2 + 4)
        matches = await call_index(
            self.deps,
            collection,
            "Query",
            vector_pb2.QueryRequest(
                index_name=naming.index_name(collection),
                vector=embedded.embeddings[0].values,
                top_k=fetch,
                filter=filter_,
            ),
        )
        ids = [m.id for m in matches.matches]
        rows = await self.deps.catalog.visible_chunks(collection, ids)
        hits: list[Hit] = []
        for match in matches.matches:
            row = rows.get(match.id)
            if row is None:
                continue
            hits.append(
                Hit(
                    row["document_id"], row["chunk_index"], row["text"], float(match.score), json.loads(row["metadata"])
                )
            )
            if len(hits) == top_k:
                break
        return hits

    async def plan(self, collection: str, question: str, options: Any) -> AskPlan:
        top_k = options.top_k or 5
        if not 1 <= top_k <= 20:
            raise InvalidArgument(f"top_k {top_k} is outside 1..20", reason="BAD_TOP_K")
        if not question.strip():
            raise InvalidArgument("question must not be empty", reason="EMPTY_QUESTION")
        if options.max_tokens < 0:
            raise InvalidArgument("max_tokens must not be negative", reason="BAD_MAX_TOKENS")
        if options.HasField("min_score") and not math.isfinite(options.min_score):
            # NaN compares false with every score: the answer would silently use no source.
            raise InvalidArgument(
                f"min_score is {options.min_score}; it must be a finite number", reason="BAD_MIN_SCORE"
            )
        filter_ = options.filter if options.HasField("filter") else None
        hits = await self.search(collection, question, top_k, filter_)
        threshold = options.min_score if options.HasField("min_score") else self.deps.settings.min_score
        sources = [h for h in hits if h.score >= threshold]
        if not sources:
            return AskPlan(collection, [], [], found=False)
        max_tokens = options.max_tokens or self.deps.settings.answer_max_tokens
        sources = await self._fit(sources, question, max_tokens)
        context = "\n\n".join(f"[{i}] {h.text}" for i, h in enumerate(sources, start=1))
        messages = [
            inference_pb2.Message(role=inference_pb2.ROLE_SYSTEM, content=SYSTEM_PROMPT),
            inference_pb2.Message(role=inference_pb2.ROLE_USER, content=f"Sources:\n{context}\n\nQuestion: {question}"),
        ]
        return AskPlan(collection, sources, messages, found=True)

    async def _fit(self, sources: list[Hit], question: str, max_tokens: int) -> list[Hit]:
        """Drop the lowest-ranked sources until the prompt and the answer fit the model's context."""
        budget = self.deps.settings.context_tokens - max_tokens - 64
        texts = [SYSTEM_PROMPT, question, *(h.text for h in sources)]
        try:
            reply = await self.deps.upstreams.inference.call(
                "Tokenize",
                inference_pb2.TokenizeRequest(model=self.deps.settings.generation_model, inputs=texts),
            )
            counts = list(reply.token_counts)
        except UpstreamError:
            # A backend that cannot count for this model: about four characters a token.
            counts = [len(t) // 4 + 1 for t in texts]
        used = counts[0] + counts[1]
        kept: list[Hit] = []
        for hit, tokens in zip(sources, counts[2:], strict=True):
            if used + tokens + 8 > budget:
                break
            kept.append(hit)
            used += tokens + 8
        return kept or sources[:1]

    def generate_request(self, plan: AskPlan, options: Any) -> inference_pb2.GenerateStreamRequest:
        gen = inference_pb2.GenerationOptions(max_tokens=options.max_tokens or self.deps.settings.answer_max_tokens)
        if options.HasField("temperature"):
            gen.temperature = options.temperature
        else:
            gen.temperature = 0.0
        return inference_pb2.GenerateStreamRequest(
            model=self.deps.settings.generation_model, messages=plan.messages, options=gen
        )

    async def answer_stream(self, plan: AskPlan, options: Any) -> AsyncIterator[tuple[str, Any]]:
        """("delta", text)... then ("usage", Usage). Cancelling the consumer cancels generation."""
        if not plan.found:
            yield "delta", NOT_FOUND_ANSWER.format(name=plan.collection)
            yield "usage", inference_pb2.Usage()
            return
        request = self.generate_request(plan, options)
        text = ""
        usage = inference_pb2.Usage()
        async for event in self.deps.upstreams.inference.stream(
            "GenerateStream", request, timeout=self.deps.settings.generation_timeout_seconds
        ):
            if event.WhichOneof("event") == "delta":
                text += event.delta
                yield "delta", event.delta
            else:
                usage = event.done.usage
        if not _CITATION.search(text):
            # Small models often omit citations; name the sources the answer was grounded on.
            yield "delta", "\n\nSources: " + ", ".join(f"[{i}]" for i in range(1, len(plan.sources) + 1))
        yield "usage", usage
