"""For benchmarks: the five services as separate processes (as deployed), on free loopback ports."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import ServerProcess, free_port

MODULES = {
    "inference": "services.inference",
    "vector": "services.vector",
    "metadata": "services.metadata",
    "blob": "services.blob",
}


@dataclass
class Addresses:
    gateway: str
    layers: dict[str, str]


@contextlib.contextmanager
def stack_processes(extra_env: dict[str, str] | None = None) -> Iterator[Addresses]:
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp, contextlib.ExitStack() as stack:
        data = Path(tmp)
        layers = {name: f"127.0.0.1:{free_port()}" for name in MODULES}
        common = {"STRATA_DATA_DIR": str(data), "STRATA_LOG_LEVEL": "warning", **(extra_env or {})}
        for name, module in MODULES.items():
            env = {**common, f"STRATA_{name.upper()}_LISTEN": layers[name]}
            stack.enter_context(ServerProcess(module, env, layers[name], data / f"{name}.log"))
        gateway = f"127.0.0.1:{free_port()}"
        env = {
            **common,
            "STRATA_GATEWAY_LISTEN": gateway,
            "STRATA_GATEWAY_REST_LISTEN": "",
            **{f"STRATA_{name.upper()}_ADDR": address for name, address in layers.items()},
        }
        stack.enter_context(ServerProcess("gateway", env, gateway, data / "gateway.log"))
        yield Addresses(gateway, layers)
