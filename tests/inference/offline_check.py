"""Run inside a network namespace with only loopback: the local models load and answer."""

from __future__ import annotations

import sys
import tempfile

import grpc

from services.inference.config import InferenceSettings
from services.inference.server import create_server
from strata.inference.v1 import inference_pb2 as pb
from strata.inference.v1 import inference_pb2_grpc
from tests.support.servers import serve_in_thread


def main() -> None:
    settings = InferenceSettings(data_dir=tempfile.mkdtemp())
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        with grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            vector = stub.Embed(pb.EmbedRequest(inputs=["offline"]), timeout=60).embeddings[0].values
            answer = stub.Generate(
                pb.GenerateRequest(
                    messages=[pb.Message(role=pb.ROLE_USER, content="Say hi.")],
                    options=pb.GenerationOptions(max_tokens=4, temperature=0),
                ),
                timeout=60,
            )
    print(f"OFFLINE-OK dims={len(vector)} tokens={answer.usage.output_tokens}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
