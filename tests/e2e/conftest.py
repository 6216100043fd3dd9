from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from strata.gateway.v1 import gateway_pb2_grpc
from tests.support.stack import Stack, run_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with run_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Iterator[gateway_pb2_grpc.GatewayServiceStub]:
    with grpc.insecure_channel(stack.gateway) as channel:
        yield gateway_pb2_grpc.GatewayServiceStub(channel)
