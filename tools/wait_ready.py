"""For `make run`: wait until all five services report SERVING, print where they are, then stay up.

honcho stops every process when one exits, so this one blocks until it is signalled.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from services.runtime.healthcheck import check

SERVICES = [
    ("gateway", "STRATA_GATEWAY_LISTEN", "127.0.0.1:50050"),
    ("inference", "STRATA_INFERENCE_LISTEN", "127.0.0.1:50051"),
    ("vector", "STRATA_VECTOR_LISTEN", "127.0.0.1:50052"),
    ("metadata", "STRATA_METADATA_LISTEN", "127.0.0.1:50053"),
    ("blob", "STRATA_BLOB_LISTEN", "127.0.0.1:50054"),
]
TIMEOUT_SECONDS = float(os.environ.get("STRATA_READY_TIMEOUT_SECONDS", "180"))


def main() -> int:
    addresses = {name: os.environ.get(var, default) for name, var, default in SERVICES}
    rest = os.environ.get("STRATA_GATEWAY_REST_LISTEN", "127.0.0.1:8080")
    deadline = time.monotonic() + TIMEOUT_SECONDS
    waiting = dict(addresses)
    while waiting:
        waiting = {n: a for n, a in waiting.items() if check(a, timeout=1) != "SERVING"}
        if not waiting:
            break
        if time.monotonic() > deadline:
            print(f"not SERVING after {TIMEOUT_SECONDS:.0f} s: {', '.join(waiting)}; see the logs above", flush=True)
            return 1
        time.sleep(0.25)
    gateway = addresses["gateway"]
    print(
        "\nStrata is up (all five SERVING):\n"
        + "".join(f"  {name:<10} grpc://{addr}\n" for name, addr in addresses.items())
        + f"  rest       http://{rest}\n\n"
        + "Try:\n"
        + f"  grpcurl -plaintext {gateway} list\n"
        + f'  grpcurl -plaintext -d \'{{"name": "notes"}}\' {gateway} \\\n'
        + "      strata.gateway.v1.GatewayService/CreateCollection\n"
        + "\nCtrl-C stops everything.\n",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
