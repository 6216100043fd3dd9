"""Gateway benchmark: ingest throughput, search latency, and AskStream time to first source/token.

Each figure is printed beside its baseline measured in the same run:
- ingest chunks/s through the gateway vs the embedding model alone, in-process, on the same chunks
  (target >= 0.7x: embedding is the floor);
- search p50 through the gateway vs the sum of its component calls made directly (target <= 1.3x);
- AskStream time to first source and to first token.

    .venv/bin/python bench/gateway.py [--quick]

The five services run as separate processes, as deployed.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stack_processes import stack_processes
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from strata.inference.v1 import inference_pb2, inference_pb2_grpc
from strata.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from strata.vector.v1 import vector_pb2, vector_pb2_grpc

TOPICS = ["rivers", "glaciers", "bread", "violins", "satellites", "coral", "tax law", "chess", "volcanoes", "bees"]
VERBS = ["shape", "feed", "cool", "carry", "protect", "measure", "explain", "change", "hide", "reveal"]
NOUNS = ["valleys", "cities", "markets", "forests", "signals", "harbours", "proteins", "orbits", "seasons", "maps"]


def markdown_corpus(total_bytes: int, seed: int = 7) -> list[str]:
    """Deterministic Markdown documents of headings and paragraphs, about `total_bytes` in all."""
    rng = random.Random(seed)
    documents, size = [], 0
    while size < total_bytes:
        topic = rng.choice(TOPICS)
        parts = [f"# Notes on {topic} {len(documents)}"]
        for _ in range(rng.randint(6, 12)):
            sentences = [
                f"The {topic} {rng.choice(VERBS)} the {rng.choice(NOUNS)} of region {rng.randint(1, 500)} "
                f"in ways that {rng.choice(NOUNS)} and {rng.choice(NOUNS)} rarely {rng.choice(VERBS)}."
                for _ in range(rng.randint(3, 7))
            ]
            parts.append(" ".join(sentences))
        text = "\n\n".join(parts)
        documents.append(text)
        size += len(text.encode())
    return documents


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small corpus, few queries")
    args = parser.parse_args()
    corpus_bytes = 200_000 if args.quick else 2_000_000
    queries = 20 if args.quick else 200
    documents = markdown_corpus(corpus_bytes)

    with stack_processes() as stack:
        channel = grpc.insecure_channel(stack.gateway)
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        gateway.CreateCollection(gateway_pb2.CreateCollectionRequest(name="bench"))

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            replies = list(
                pool.map(
                    lambda item: gateway.PutDocument(
                        gateway_pb2.PutDocumentRequest(
                            collection="bench",
                            document_id=f"doc-{item[0]}",
                            text=item[1],
                            content_type="text/markdown",
                        ),
                        timeout=600,
                    ),
                    enumerate(documents),
                )
            )
        ingest_seconds = time.perf_counter() - started
        chunks = sum(r.document.chunk_count for r in replies)

        metadata = metadata_pb2_grpc.MetadataServiceStub(grpc.insecure_channel(stack.layers["metadata"]))
        rows = metadata.Query(
            metadata_pb2.QueryRequest(database="strata_gateway", sql="SELECT text FROM chunks ORDER BY vector_id")
        ).result.rows
        texts = [r.values[0].text_value for r in rows]

        # Search: the gateway vs its three component calls made directly, one after another.
        inference = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(stack.layers["inference"]))
        vector = vector_pb2_grpc.VectorServiceStub(grpc.insecure_channel(stack.layers["vector"]))
        questions = [
            f"how do {random.choice(TOPICS)} {random.choice(VERBS)} {random.choice(NOUNS)}?" for _ in range(queries)
        ]
        through_gateway, direct = [], []
        for question in questions:
            t0 = time.perf_counter()
            gateway.Search(gateway_pb2.SearchRequest(collection="bench", query=question, top_k=5))
            through_gateway.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            vec = inference.Embed(inference_pb2.EmbedRequest(inputs=[question])).embeddings[0].values
            matches = vector.Query(vector_pb2.QueryRequest(index_name="bench", vector=vec, top_k=14)).matches
            ids = [m.id for m in matches]
            metadata.Query(
                metadata_pb2.QueryRequest(
                    database="strata_gateway",
                    sql="SELECT c.vector_id, c.text, d.metadata FROM chunks c JOIN documents d ON d.collection ="
                    " c.collection AND d.id = c.document_id AND d.generation = c.generation WHERE c.collection = ?"
                    f" AND d.status = 'ready' AND c.vector_id IN ({', '.join('?' for _ in ids)})",
                    params=[metadata_pb2.Value(text_value="bench"), *(metadata_pb2.Value(text_value=i) for i in ids)],
                    read_only=True,
                )
            )
            direct.append(time.perf_counter() - t0)

        # AskStream: time to the sources event and to the first answer token.
        first_source, first_token = [], []
        for question in questions[: 3 if args.quick else 10]:
            t0 = time.perf_counter()
            got_source = None
            for event in gateway.AskStream(
                gateway_pb2.AskStreamRequest(
                    collection="bench",
                    question=question,
                    options=gateway_pb2.AskOptions(max_tokens=16, min_score=-1.0),
                ),
                timeout=300,
            ):
                kind = event.WhichOneof("event")
                if kind == "sources" and got_source is None:
                    got_source = time.perf_counter() - t0
                elif kind == "delta":
                    first_token.append(time.perf_counter() - t0)
                    break
            first_source.append(got_source or 0.0)
        channel.close()

    # Baseline: the embedding model alone, in-process, batches of 32, on the same chunk texts.
    from services.inference.minilm import MiniLMEmbedder

    model = MiniLMEmbedder(threads=2, chunk_size=32)
    model.embed(texts[:32])
    t0 = time.perf_counter()
    for i in range(0, len(texts), 32):
        model.embed(texts[i : i + 32])
    model_seconds = time.perf_counter() - t0

    ingest_rate = chunks / ingest_seconds
    model_rate = len(texts) / model_seconds
    gw_p50, direct_p50 = statistics.median(through_gateway), statistics.median(direct)
    print(f"corpus: {len(documents)} Markdown documents, {corpus_bytes / 1e6:.1f} MB, {chunks} chunks")
    print(
        f"ingest          {ingest_rate:8.1f} chunks/s   model alone {model_rate:8.1f} chunks/s   "
        f"ratio {ingest_rate / model_rate:.2f}x  (target >= 0.7x)"
    )
    print(
        f"search p50      {gw_p50 * 1000:8.2f} ms   components direct {direct_p50 * 1000:8.2f} ms   "
        f"ratio {gw_p50 / direct_p50:.2f}x  (target <= 1.3x)   "
        f"gateway p99 {percentile(through_gateway, 0.99) * 1000:.2f} ms"
    )
    print(
        f"ask first source p50 {statistics.median(first_source) * 1000:8.1f} ms   "
        f"first token p50 {statistics.median(first_token) * 1000:8.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
