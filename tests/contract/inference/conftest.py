"""Fixtures for the inference contract suite.

The suite runs against every backend of our server (local models, and the
openai backend in front of a real OpenAI-compatible server on loopback), or,
when STRATA_CONFORMANCE_ADDR=host:port is set, only against that address, so
anyone can certify their own implementation of strata.inference.v1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from strata.inference.v1 import inference_pb2_grpc

# Read at import: tests/conftest.py strips STRATA_* variables from each test's environment.
CONFORMANCE_ADDR = os.environ.get("STRATA_CONFORMANCE_ADDR", "").strip()
BACKENDS = ["external"] if CONFORMANCE_ADDR else ["local", "openai"]


def _serve(backend: str, data_dir: Path) -> Iterator[str]:
    from services.inference.config import InferenceSettings
    from services.inference.server import create_server
    from tests.support.servers import serve_in_thread

    if backend == "local":
        settings = InferenceSettings(data_dir=data_dir, generation_queue_depth=16)
        with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
            yield address
        return
    from tests.inference.openai_fake import FakeOpenAI

    with FakeOpenAI() as fake:
        settings = InferenceSettings(
            data_dir=data_dir,
            backend="openai",
            openai_base_url=fake.base_url,
            openai_embedding_model=fake.script.embedding_model,
            openai_generation_model=fake.script.chat_model,
            openai_embedding_dimensions=384,
            openai_max_input_tokens=256,
            openai_backoff_seconds=0.01,
            generation_queue_depth=16,
        )
        with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
            yield address


@pytest.fixture(scope="session", params=BACKENDS)
def inference_address(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "external":
        yield CONFORMANCE_ADDR
        return
    yield from _serve(request.param, tmp_path_factory.mktemp(f"inference-{request.param}"))


@pytest.fixture(scope="session")
def channel(inference_address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(inference_address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        yield channel


@pytest.fixture
def stub(channel: grpc.Channel) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(channel)
