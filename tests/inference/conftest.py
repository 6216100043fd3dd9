"""Fixtures for the inference service's own tests: servers on port 0 and a fake OpenAI upstream."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.inference.config import InferenceSettings
from services.inference.server import create_server
from strata.inference.v1 import inference_pb2_grpc
from tests.inference.openai_fake import FakeOpenAI
from tests.support.servers import serve_in_thread


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The shared fake, with a clean script and request log for this test."""
    fake_openai.reset()
    yield fake_openai
    fake_openai.reset()


def openai_settings(fake: FakeOpenAI, data_dir: Path, **overrides: Any) -> InferenceSettings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "backend": "openai",
        "openai_base_url": fake.base_url,
        "openai_embedding_model": fake.script.embedding_model,
        "openai_generation_model": fake.script.chat_model,
        "openai_embedding_dimensions": 384,
        "openai_max_input_tokens": 256,
        "openai_backoff_seconds": 0.01,
        "openai_max_backoff_seconds": 2.0,
        "openai_timeout_seconds": 10.0,
        "health_probe_seconds": 0.2,
    }
    values.update(overrides)
    return InferenceSettings(**values)


@pytest.fixture
def serve() -> Iterator[Callable[[InferenceSettings], Any]]:
    """serve(settings) -> context manager yielding (stub, address) for a server on port 0."""

    @contextlib.contextmanager
    def start(settings: InferenceSettings) -> Iterator[tuple[inference_pb2_grpc.InferenceServiceStub, str]]:
        with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
            channel = grpc.insecure_channel(address)
            try:
                yield inference_pb2_grpc.InferenceServiceStub(channel), address
            finally:
                channel.close()

    yield start


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local-backend server shared by the tests that only read from it."""
    settings = InferenceSettings(data_dir=tmp_path_factory.mktemp("inference-local"), generation_queue_depth=4)
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        yield address


@pytest.fixture(scope="session")
def local_stub(local_server: str) -> Iterator[inference_pb2_grpc.InferenceServiceStub]:
    with grpc.insecure_channel(local_server) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel)
