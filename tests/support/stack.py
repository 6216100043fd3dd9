"""The whole Strata stack in one test process: four layers and the gateway, each on port 0."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from gateway.config import GatewaySettings
from tests.support.servers import serve_in_thread, wait_serving

LAYERS = {
    "inference": ("services.inference.server", "services.inference.config", "InferenceSettings"),
    "vector": ("services.vector.server", "services.vector.config", "VectorSettings"),
    "metadata": ("services.metadata.server", "services.metadata.config", "MetadataSettings"),
    "blob": ("services.blob.server", "services.blob.config", "BlobSettings"),
}


@dataclass
class Stack:
    gateway: str
    layers: dict[str, str]
    data_dir: Path
    rest: str = ""
    gateway_metrics: str = ""  # http://host:port/metrics of the gateway


def layer_settings(layer: str, data_dir: Path, **overrides: Any) -> Any:
    _server, config_module, cls_name = LAYERS[layer]
    cls = getattr(importlib.import_module(config_module), cls_name)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {"data_dir": data_dir, "log_level": "warning", **overrides}
    return cls(**{k: v for k, v in values.items() if k in fields})


@contextlib.contextmanager
def serve_layer(layer: str, data_dir: Path, **overrides: Any) -> Iterator[str]:
    server_module = importlib.import_module(LAYERS[layer][0])
    settings = layer_settings(layer, data_dir, **overrides)
    with serve_in_thread(lambda: server_module.create_server("127.0.0.1:0", settings)) as address:
        yield address


# gRPC address -> metrics URL of the gateways started here.
metrics_urls: dict[str, str] = {}


@contextlib.contextmanager
def serve_gateway(layers: dict[str, str], **overrides: Any) -> Iterator[tuple[str, str]]:
    """Yields (gRPC address, REST base URL or "")."""
    from gateway.server import create_server

    values: dict[str, Any] = {
        "inference_addr": layers["inference"],
        "vector_addr": layers["vector"],
        "metadata_addr": layers["metadata"],
        "blob_addr": layers["blob"],
        "rest_listen": "127.0.0.1:0",
        "log_level": "warning",
        "health_probe_seconds": 0.2,
        **overrides,
    }
    settings = GatewaySettings(**values)
    created: dict[str, Any] = {}

    def make() -> Any:
        server, port = create_server("127.0.0.1:0", settings)
        created["server"] = server
        return server, port

    with serve_in_thread(make) as address:
        credentials = None
        if settings.tls_cert_file:
            ca = Path(settings.tls_ca_file or settings.tls_cert_file).read_bytes()
            credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        wait_serving(address, 60, credentials=credentials)
        rest_port = created["server"].rest_port
        metrics_urls[address] = f"http://127.0.0.1:{created['server'].metrics_port}/metrics"
        yield address, (f"http://127.0.0.1:{rest_port}" if rest_port else "")


@contextlib.contextmanager
def run_stack(
    data_dir: Path,
    layer_overrides: dict[str, Any] | None = None,
    per_layer: dict[str, dict[str, Any]] | None = None,
    **gateway_overrides: Any,
) -> Iterator[Stack]:
    """All five on port 0. `layer_overrides` apply to every layer, `per_layer[name]` to one."""
    with contextlib.ExitStack() as stack:
        layers = {
            name: stack.enter_context(
                serve_layer(name, data_dir, **{**(layer_overrides or {}), **(per_layer or {}).get(name, {})})
            )
            for name in LAYERS
        }
        gateway, rest = stack.enter_context(serve_gateway(layers, **gateway_overrides))
        yield Stack(gateway, layers, data_dir, rest, metrics_urls.get(gateway, ""))


class LayerProcess:
    """A layer served in-process on a fixed address, which a test can stop and start again."""

    def __init__(self, layer: str, data_dir: Path, **overrides: Any) -> None:
        from tests.support.servers import free_port

        self.layer = layer
        self.data_dir = data_dir
        self.overrides = overrides
        self.address = f"127.0.0.1:{free_port()}"
        self._running: contextlib.ExitStack | None = None

    def start(self) -> LayerProcess:
        server_module = importlib.import_module(LAYERS[self.layer][0])
        settings = layer_settings(self.layer, self.data_dir, **self.overrides)
        running = contextlib.ExitStack()
        running.enter_context(serve_in_thread(lambda: server_module.create_server(self.address, settings), grace=0))
        self._running = running
        return self

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None
