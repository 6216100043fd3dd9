"""Small helpers for the inference contract tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from strata.inference.v1 import inference_pb2 as pb


def rpc_error(call: Callable[[], Any], code: grpc.StatusCode) -> grpc.RpcError:
    """Run `call`, assert it fails with `code` and carries an ErrorInfo reason; return the error."""
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, f"expected {code.name}, got {error.code().name}: {error.details()}"
    status = rpc_status.from_call(error)
    assert status is not None, "no rich status on the error"
    reasons = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            reasons.append(info.reason)
    assert reasons and all(reasons), "ErrorInfo with a reason expected"
    return error


def models(stub: Any, task: int = pb.MODEL_TASK_UNSPECIFIED) -> list[pb.Model]:
    return list(stub.ListModels(pb.ListModelsRequest(task=task), timeout=30).models)


def default_model(stub: Any, task: int) -> pb.Model:
    return next(m for m in models(stub, task) if m.is_default)


def user(text: str) -> pb.Message:
    return pb.Message(role=pb.ROLE_USER, content=text)
