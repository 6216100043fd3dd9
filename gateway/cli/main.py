"""`strata`: argument parsing, and the one place failures become messages and exit codes.

Exit codes: 0 success; 1 some documents failed to ingest, or a service is not SERVING;
2 bad usage or a failed gateway call (`error: STATUS: message` on stderr); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import grpc
from google.protobuf.struct_pb2 import Struct

from gateway.cli import collections, health, ingest, query
from gateway.cli.connection import DEFAULT_ADDRESS, ENV_ADDRESS, ENV_API_KEY, ENV_TLS_CA, CliError, Target, rpc_failure
from strata.gateway.v1 import gateway_pb2


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _concurrency(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"must be 1..256, got {text}")
    return value


def json_object(text: str | None, flag: str) -> Struct | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CliError(f'{flag} must be a JSON object, like {{"lang": "en"}}')
    struct = Struct()
    struct.update(value)
    return struct


def _common_options() -> argparse.ArgumentParser:
    # SUPPRESS defaults let these flags go before or after the command without one hiding the other.
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection")
    group.add_argument(
        "--address",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help=f"gateway gRPC address (env {ENV_ADDRESS}; default {DEFAULT_ADDRESS})",
    )
    group.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help=f"API key, sent as `authorization: Bearer KEY` (env {ENV_API_KEY}, which `ps` does not show)",
    )
    group.add_argument(
        "--tls-ca",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"PEM CA bundle; connect over TLS trusting it (env {ENV_TLS_CA})",
    )
    group.add_argument(
        "--timeout",
        type=_positive_float,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="deadline of each call (default: 60 s; 600 s per ingested document; none for ask; 3 s for health)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(
        prog="strata",
        parents=[common],
        description="Command line for the Strata gateway: collections, ingest, search, ask and health.",
        epilog="Exit codes: 0 ok; 1 some documents failed or a service is not serving; 2 usage or call error.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cols = commands.add_parser("collections", help="list, create, describe or delete collections")
    actions = cols.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = actions.add_parser("list", parents=[common], help="list collections")
    p.add_argument("--json", action="store_true", help="print the proto3 JSON the REST API returns")
    p.set_defaults(run=lambda a, t: collections.list_collections(t, a.json))
    p = actions.add_parser("create", parents=[common], help="create a collection")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--embedding-model", default="", metavar="MODEL", help="default: the inference service's default")
    p.add_argument("--chunk-size", type=int, metavar="TOKENS", help="tokens per chunk, 32..512 (default 200)")
    p.add_argument("--overlap", type=int, metavar="TOKENS", help="tokens shared by consecutive chunks (default 30)")
    p.add_argument("--json", action="store_true", help="print the proto3 JSON the REST API returns")
    p.set_defaults(
        run=lambda a, t: collections.create_collection(
            t, a.name, a.description, a.embedding_model, a.chunk_size, a.overlap, a.json
        )
    )
    p = actions.add_parser("get", parents=[common], help="describe a collection")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="print the proto3 JSON the REST API returns")
    p.set_defaults(run=lambda a, t: collections.get_collection(t, a.name, a.json))
    p = actions.add_parser("delete", parents=[common], help="delete a collection and all its documents")
    p.add_argument("name")
    p.set_defaults(run=lambda a, t: collections.delete_collection(t, a.name))

    p = commands.add_parser(
        "ingest",
        parents=[common],
        help="put files and folders into a collection",
        description="Put .txt, .md, .html/.htm and .pdf files into a collection; folders are walked (hidden entries "
        "skipped). A document's id is its path relative to the argument it was found under.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--collection", "-c", required=True, metavar="NAME")
    p.add_argument(
        "--concurrency", "-j", type=_concurrency, default=4, metavar="N", help="documents in flight at once (default 4)"
    )
    p.add_argument("--metadata", metavar="JSON", help="JSON object attached to every document, for search filters")
    p.set_defaults(
        run=lambda a, t: ingest.run_ingest(
            t, a.collection, a.paths, a.concurrency, json_object(a.metadata, "--metadata")
        )
    )

    p = commands.add_parser("search", parents=[common], help="find the chunks most relevant to a query")
    p.add_argument("query")
    p.add_argument("--collection", "-c", required=True, metavar="NAME")
    p.add_argument("--top-k", "-k", type=int, default=0, metavar="K", help="results, 1..100 (default 5)")
    p.add_argument("--filter", metavar="JSON", help='metadata filter, e.g. \'{"lang": {"$eq": "en"}}\'')
    p.add_argument("--json", action="store_true", help="print the proto3 JSON the REST API returns")
    p.set_defaults(
        run=lambda a, t: query.search(t, a.collection, a.query, a.top_k, json_object(a.filter, "--filter"), a.json)
    )

    p = commands.add_parser("ask", parents=[common], help="answer a question from a collection, with sources")
    p.add_argument("question")
    p.add_argument("--collection", "-c", required=True, metavar="NAME")
    p.add_argument("--top-k", "-k", type=int, default=0, metavar="K", help="chunks to retrieve, 1..20 (default 5)")
    p.add_argument("--filter", metavar="JSON", help="metadata filter, as for search")
    p.add_argument("--min-score", type=float, metavar="S", help="ignore chunks scoring below S (server default)")
    p.add_argument("--max-tokens", type=int, default=0, metavar="N", help="most answer tokens (server default)")
    p.add_argument("--temperature", type=float, metavar="T", help="sampling temperature, 0..2 (server default)")
    p.set_defaults(run=_ask)

    p = commands.add_parser(
        "health",
        parents=[common],
        help="health of the gateway and each layer",
        description="Checks grpc.health.v1 on the gateway and on the layers at STRATA_INFERENCE_ADDR, "
        "STRATA_VECTOR_ADDR, STRATA_METADATA_ADDR and STRATA_BLOB_ADDR (default 127.0.0.1:50051..50054).",
    )
    p.set_defaults(run=lambda a, t: health.run_health(t))
    return parser


def _ask(args: argparse.Namespace, target: Target) -> int:
    options = gateway_pb2.AskOptions(
        top_k=args.top_k,
        filter=json_object(args.filter, "--filter"),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        min_score=args.min_score,
    )
    return query.ask(target, args.collection, args.question, options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    target = Target.from_options(
        getattr(args, "address", None),
        getattr(args, "api_key", None),
        getattr(args, "tls_ca", None),
        getattr(args, "timeout", None),
    )
    try:
        code: int = args.run(args, target)
        sys.stdout.flush()
        return code
    except CliError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    except grpc.RpcError as exc:
        sys.stderr.write(f"error: {rpc_failure(exc, target)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`strata search ... | head`); don't let the exit flush complain too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
