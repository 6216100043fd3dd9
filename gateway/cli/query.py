"""`strata search` and `strata ask` (streamed: the answer as it is generated, then its sources)."""

from __future__ import annotations

import sys

import grpc
from google.protobuf.struct_pb2 import Struct

from gateway.cli import output
from gateway.cli.connection import Target
from strata.gateway.v1 import gateway_pb2

SEARCH_TIMEOUT_SECONDS = 60.0


def search(
    target: Target, collection: str, query: str, top_k: int, metadata_filter: Struct | None, as_json: bool
) -> int:
    request = gateway_pb2.SearchRequest(collection=collection, query=query, top_k=top_k, filter=metadata_filter)
    with target.channel() as channel:
        reply = target.gateway(channel).Search(
            request, timeout=target.deadline(SEARCH_TIMEOUT_SECONDS), metadata=target.metadata
        )
    if as_json:
        output.print_json(reply)
    else:
        print(output.search_results(reply.results))
    return 0


def ask(
    target: Target,
    collection: str,
    question: str,
    options: gateway_pb2.AskOptions,
) -> int:
    request = gateway_pb2.AskStreamRequest(collection=collection, question=question, options=options)
    out = sys.stdout
    sources: list[gateway_pb2.Source] = []
    wrote = False
    with target.channel() as channel:
        # No default deadline: a long answer on a slow CPU is fine, and Ctrl-C cancels the stream (and generation).
        stream = target.gateway(channel).AskStream(request, timeout=target.timeout, metadata=target.metadata)
        try:
            for event in stream:
                kind = event.WhichOneof("event")
                if kind == "sources":
                    sources = list(event.sources.sources)
                elif kind == "delta":
                    out.write(event.delta)
                    out.flush()
                    wrote = True
        except grpc.RpcError:
            if wrote:  # end the partial answer so the error starts on its own line
                out.write("\n")
                out.flush()
            raise
        finally:
            stream.cancel()
    out.write(("\n\n" + output.sources(sources) if sources else "") + "\n")
    return 0
