"""`strata ingest`: walk files and folders, put each supported file as a document, a bounded number at a time.

A document's id is its path relative to the argument it was found under (`docs/a/b.md` given `docs` is
`a/b.md`; a file given directly is its own name), so ingesting the same tree again only changes what
changed. Hidden files and folders are not walked.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import grpc
from google.protobuf.struct_pb2 import Struct

from gateway.cli.connection import Target, rpc_failure, status_of
from gateway.cli.progress import Progress
from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc

CONTENT_TYPES = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".pdf": "application/pdf",
}
# Embedding a large PDF takes a while; a per-document deadline still stops a hung gateway.
DOCUMENT_TIMEOUT_SECONDS = 600.0


@dataclass(frozen=True)
class Candidate:
    path: Path
    document_id: str
    content_type: str


@dataclass
class Plan:
    files: list[Candidate]
    skipped: list[tuple[str, str]]  # (path, why)
    missing: list[tuple[str, str]]  # (path, why): arguments that cannot be read count as failures


@dataclass(frozen=True)
class Outcome:
    candidate: Candidate
    changed: bool = False
    error: str = ""  # "STATUS: message" when the put failed


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath, name)


def discover(roots: Sequence[str]) -> Plan:
    plan = Plan([], [], [])
    owners: dict[str, Path] = {}
    for raw in roots:
        root = Path(raw)
        if root.is_dir():
            found = [(path, path.relative_to(root).as_posix()) for path in _walk(root)]
        elif root.exists():
            found = [(root, root.name)]
        else:
            plan.missing.append((raw, "no such file or directory"))
            continue
        for path, document_id in found:
            content_type = CONTENT_TYPES.get(path.suffix.lower())
            if not path.is_file():
                plan.skipped.append((str(path), "not a regular file"))
            elif content_type is None:
                plan.skipped.append((str(path), f"unsupported file type {path.suffix or '(no extension)'}"))
            elif document_id in owners:
                plan.skipped.append((str(path), f"same document id {document_id!r} as {owners[document_id]}"))
            else:
                owners[document_id] = path
                plan.files.append(Candidate(path, document_id, content_type))
    return plan


def _put(
    stub: gateway_pb2_grpc.GatewayServiceStub,
    target: Target,
    collection: str,
    candidate: Candidate,
    metadata: Struct | None,
) -> Outcome:
    try:
        data = candidate.path.read_bytes()
    except OSError as exc:
        return Outcome(candidate, error=f"cannot read the file: {exc.strerror}")
    request = gateway_pb2.PutDocumentRequest(
        collection=collection,
        document_id=candidate.document_id,
        data=data,
        content_type=candidate.content_type,
        metadata=metadata,
    )
    try:
        reply = stub.PutDocument(request, timeout=target.deadline(DOCUMENT_TIMEOUT_SECONDS), metadata=target.metadata)
    except grpc.RpcError as exc:
        name, message = status_of(exc)
        return Outcome(candidate, error=f"{name}: {message}")
    return Outcome(candidate, changed=reply.changed)


def _put_all(
    channel: grpc.Channel,
    target: Target,
    collection: str,
    files: Sequence[Candidate],
    concurrency: int,
    metadata: Struct | None,
) -> tuple[list[Outcome], bool]:
    """Outcomes of the puts that finished, and whether the user interrupted the rest."""
    stub = target.gateway(channel)
    progress = Progress(len(files))
    outcomes: list[Outcome] = []
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="strata-ingest")
    try:
        futures: list[Future[Outcome]] = [
            pool.submit(_put, stub, target, collection, candidate, metadata) for candidate in files
        ]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes.append(outcome)
            progress.advance(outcome.candidate.document_id)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        channel.close()  # cancels the puts in flight
        return outcomes, True
    finally:
        progress.close()
    pool.shutdown()
    return outcomes, False


def summarize(plan: Plan, outcomes: Sequence[Outcome], seconds: float, out: TextIO) -> int:
    """Print what was skipped and what failed, then the counts; the exit code is 1 if anything failed."""
    failed = sorted((o for o in outcomes if o.error), key=lambda o: str(o.candidate.path))
    failures = [*plan.missing, *((str(o.candidate.path), o.error) for o in failed)]
    for path, why in plan.skipped:
        out.write(f"skipped {path}: {why}\n")
    for path, why in failures:
        out.write(f"failed  {path}: {why}\n")
    ingested = sum(1 for o in outcomes if not o.error and o.changed)
    unchanged = sum(1 for o in outcomes if not o.error and not o.changed)
    out.write(
        f"{ingested} ingested, {unchanged} unchanged, {len(failures)} failed, {len(plan.skipped)} skipped"
        f" in {seconds:.1f} s\n"
    )
    return 1 if failures else 0


def run_ingest(
    target: Target,
    collection: str,
    roots: Sequence[str],
    concurrency: int,
    metadata: Struct | None = None,
    out: TextIO | None = None,
) -> int:
    started = time.monotonic()
    out = out or sys.stdout
    with target.channel() as channel:
        try:  # one cheap call first: an unknown collection or a dead gateway is one error, not one per file
            target.gateway(channel).GetCollection(
                gateway_pb2.GetCollectionRequest(name=collection), timeout=target.deadline(30), metadata=target.metadata
            )
        except grpc.RpcError as exc:
            raise rpc_failure(exc, target) from None
        plan = discover(roots)
        outcomes, interrupted = _put_all(channel, target, collection, plan.files, concurrency, metadata)
    code = summarize(plan, outcomes, time.monotonic() - started, out)
    if interrupted:
        sys.stderr.write(f"interrupted: {len(plan.files) - len(outcomes)} files were not ingested\n")
        return 130
    return code
