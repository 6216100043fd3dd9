"""`strata collections list|create|get|delete`."""

from __future__ import annotations

import sys

from gateway.cli import output
from gateway.cli.connection import Target
from strata.gateway.v1 import gateway_pb2

UNARY_TIMEOUT_SECONDS = 60.0


def list_collections(target: Target, as_json: bool) -> int:
    collections: list[gateway_pb2.Collection] = []
    with target.channel() as channel:
        stub, token = target.gateway(channel), ""
        while True:
            page = stub.ListCollections(
                gateway_pb2.ListCollectionsRequest(page_size=1000, page_token=token),
                timeout=target.deadline(UNARY_TIMEOUT_SECONDS),
                metadata=target.metadata,
            )
            collections.extend(page.collections)
            token = page.next_page_token
            if not token:
                break
    if as_json:
        output.print_json(gateway_pb2.ListCollectionsResponse(collections=collections))
    elif collections:
        print(output.collection_rows(collections))
    else:
        print("no collections (create one with `strata collections create NAME`)")
    return 0


def create_collection(
    target: Target,
    name: str,
    description: str,
    embedding_model: str,
    chunk_size: int | None,
    overlap: int | None,
    as_json: bool,
) -> int:
    chunking = None
    if chunk_size is not None or overlap is not None:
        chunking = gateway_pb2.ChunkingConfig(chunk_size_tokens=chunk_size or 0, chunk_overlap_tokens=overlap)
    request = gateway_pb2.CreateCollectionRequest(
        name=name, description=description, embedding_model=embedding_model, chunking=chunking
    )
    with target.channel() as channel:
        reply = target.gateway(channel).CreateCollection(
            request, timeout=target.deadline(UNARY_TIMEOUT_SECONDS), metadata=target.metadata
        )
    if as_json:
        output.print_json(reply.collection)
    else:
        print(f"created collection {reply.collection.name}")
        print(output.collection_details(reply.collection))
    return 0


def get_collection(target: Target, name: str, as_json: bool) -> int:
    with target.channel() as channel:
        reply = target.gateway(channel).GetCollection(
            gateway_pb2.GetCollectionRequest(name=name),
            timeout=target.deadline(UNARY_TIMEOUT_SECONDS),
            metadata=target.metadata,
        )
    if as_json:
        output.print_json(reply.collection)
    else:
        print(output.collection_details(reply.collection))
    return 0


def delete_collection(target: Target, name: str) -> int:
    with target.channel() as channel:
        target.gateway(channel).DeleteCollection(
            gateway_pb2.DeleteCollectionRequest(name=name),
            timeout=target.deadline(UNARY_TIMEOUT_SECONDS),
            metadata=target.metadata,
        )
    sys.stdout.write(f"deleted collection {name}\n")
    return 0
