"""The `strata` command line end to end: a real stack in-process, the CLI as a subprocess, outputs and exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import pty
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.cli.conftest import run_cli, strata_env
from tests.cli.documents import INGESTED_IDS, make_corpus
from tests.support.servers import REPO_ROOT, free_port, serve_in_thread
from tests.support.stack import Stack, serve_gateway

HAS_LLM = importlib.util.find_spec("llama_cpp") is not None


def new_name() -> str:
    return f"cli-{uuid.uuid4().hex[:8]}"


def create(stack: Stack, *extra: str) -> str:
    name = new_name()
    done = run_cli(stack.gateway, "collections", "create", name, "--chunk-size", "64", *extra)
    assert done.returncode == 0, done.stderr
    return name


def assert_clean_error(done: subprocess.CompletedProcess[str], status: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(f"error: {status}: "), done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("corpus") / "docs")


@pytest.fixture(scope="module")
def ingested(stack: Stack, corpus: Path) -> tuple[str, subprocess.CompletedProcess[str]]:
    """A collection with the corpus ingested once, and that ingest's result."""
    name = create(stack)
    return name, run_cli(stack.gateway, "ingest", str(corpus), "--collection", name, "--concurrency", "3")


def test_collections_create_list_get_delete(stack: Stack) -> None:
    name = new_name()
    options = ["--chunk-size", "64", "--overlap", "8", "--description", "cli test"]
    made = run_cli(stack.gateway, "collections", "create", name, *options)
    assert made.returncode == 0, made.stderr
    assert f"created collection {name}" in made.stdout
    assert "64 tokens, overlap 8" in made.stdout

    listed = run_cli(stack.gateway, "collections", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["NAME", "DOCUMENTS", "CHUNKS", "MODEL", "CREATED", "DESCRIPTION"]
    row = next(line for line in listed.stdout.splitlines() if line.startswith(name + " "))
    assert row.split()[1:3] == ["0", "0"] and row.endswith("cli test")

    got = run_cli(stack.gateway, "collections", "get", name, "--json")
    assert got.returncode == 0, got.stderr
    collection = json.loads(got.stdout)
    assert collection["name"] == name and collection["dimensions"] == 384
    assert collection["chunking"] == {"chunkSizeTokens": 64, "chunkOverlapTokens": 8}

    assert_clean_error(run_cli(stack.gateway, "collections", "create", name), "ALREADY_EXISTS")
    deleted = run_cli(stack.gateway, "collections", "delete", name)
    assert deleted.returncode == 0 and deleted.stdout == f"deleted collection {name}\n"
    gone = run_cli(stack.gateway, "collections", "get", name)
    assert_clean_error(gone, "NOT_FOUND")
    assert name in gone.stderr
    assert name not in run_cli(stack.gateway, "collections", "list").stdout


def test_bad_collection_name_is_invalid_argument(stack: Stack) -> None:
    assert_clean_error(run_cli(stack.gateway, "collections", "create", "Not_A_Name"), "INVALID_ARGUMENT")


def test_ingest_reports_ingested_skipped_and_failed(stack: Stack, corpus: Path, ingested: tuple) -> None:
    name, done = ingested
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("4 ingested, 0 unchanged, 1 failed, 1 skipped in ")
    assert f"skipped {corpus / 'image.png'}: unsupported file type .png" in lines
    failure = next(line for line in lines if line.startswith("failed"))
    assert failure.startswith(f"failed  {corpus / 'bad.txt'}: INVALID_ARGUMENT: ")
    assert "UTF-8" in failure
    assert "secret" not in done.stdout  # hidden folders are not walked
    assert "\r" not in done.stderr and done.stderr == ""  # no progress bar when stderr is not a terminal

    with grpc.insecure_channel(stack.gateway) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        documents = stub.ListDocuments(gateway_pb2.ListDocumentsRequest(collection=name)).documents
    ready = {d.id for d in documents if d.status == gateway_pb2.DOCUMENT_STATUS_READY}
    assert ready == INGESTED_IDS


def test_ingest_again_changes_nothing(stack: Stack, corpus: Path, ingested: tuple) -> None:
    name, _ = ingested
    again = run_cli(stack.gateway, "ingest", str(corpus), "-c", name)
    assert again.returncode == 1  # bad.txt still fails
    assert again.stdout.splitlines()[-1].startswith("0 ingested, 4 unchanged, 1 failed, 1 skipped")


def test_ingest_single_files_use_their_names_and_missing_paths_fail(stack: Stack, corpus: Path) -> None:
    name = create(stack)
    done = run_cli(stack.gateway, "ingest", str(corpus / "coffee.txt"), "no/such/file.md", "-c", name, cwd=corpus)
    assert done.returncode == 1
    assert "failed  no/such/file.md: no such file or directory" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("1 ingested, 0 unchanged, 1 failed, 0 skipped")
    ok = run_cli(stack.gateway, "ingest", "coffee.txt", "-c", name, cwd=corpus)
    assert ok.returncode == 0 and ok.stdout.startswith("0 ingested, 1 unchanged, 0 failed")


def test_ingest_into_unknown_collection_is_one_error(stack: Stack, corpus: Path) -> None:
    done = run_cli(stack.gateway, "ingest", str(corpus), "-c", "no-such-collection")
    assert_clean_error(done, "NOT_FOUND")
    assert done.stdout == ""


def test_ingest_draws_a_progress_bar_on_a_terminal(stack: Stack, corpus: Path) -> None:
    name = create(stack)
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "ingest", str(corpus / "notes"), "-c", name],
            env=strata_env(stack.gateway),
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=120,
        )
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                piece = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not piece:
                break
            drawn += piece
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)
    assert done.returncode == 0
    assert b"[########################] 1/1 100%" in drawn
    assert b"tea.md" in drawn
    assert done.stdout.startswith("1 ingested, 0 unchanged, 0 failed, 0 skipped")


def test_search_finds_the_right_document(stack: Stack, ingested: tuple) -> None:
    name, _ = ingested
    for query, expected in [
        ("how is green tea processed after picking?", "notes/tea.md"),
        ("what drives the rear wheel of a bike?", "sub/bicycles.html"),
        ("molten lava eruption", "papers/volcano.pdf"),
    ]:
        done = run_cli(stack.gateway, "search", query, "-c", name, "--top-k", "2")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"1. {expected} #0  (score "), done.stdout
        assert len([line for line in done.stdout.splitlines() if line[:1].isdigit()]) == 2

    as_json = run_cli(stack.gateway, "search", "espresso pressure", "-c", name, "-k", "1", "--json")
    results = json.loads(as_json.stdout)["results"]
    assert [r["documentId"] for r in results] == ["coffee.txt"]
    assert "finely ground coffee" in results[0]["text"]
    assert "javascript" not in run_cli(stack.gateway, "search", "bicycle chain", "-c", name).stdout


def test_search_filter_uses_ingest_metadata(stack: Stack, corpus: Path) -> None:
    name = create(stack)
    run_cli(stack.gateway, "ingest", str(corpus / "notes"), "-c", name, "--metadata", '{"lang": "en"}')
    run_cli(stack.gateway, "ingest", str(corpus / "coffee.txt"), "-c", name, "--metadata", '{"lang": "it"}')
    done = run_cli(stack.gateway, "search", "green tea", "-c", name, "--filter", '{"lang": {"$eq": "it"}}', "--json")
    assert done.returncode == 0, done.stderr
    assert [r["documentId"] for r in json.loads(done.stdout)["results"]] == ["coffee.txt"]

    bad = run_cli(stack.gateway, "search", "tea", "-c", name, "--filter", "{not json")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --filter is not valid JSON")
    assert_clean_error(run_cli(stack.gateway, "search", "tea", "-c", name, "--top-k", "1000"), "INVALID_ARGUMENT")


def test_ask_with_nothing_relevant_says_so_without_generating(stack: Stack, ingested: tuple) -> None:
    name, _ = ingested
    done = run_cli(stack.gateway, "ask", "Who won the 1974 World Cup?", "-c", name, "--min-score", "0.99")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"I could not find anything about that in the collection {name!r}.\n"


@pytest.mark.skipif(not HAS_LLM, reason="llama-cpp-python is not installed: no local generation")
def test_ask_streams_an_answer_then_its_sources(stack: Stack, ingested: tuple) -> None:
    name, _ = ingested
    done = run_cli(stack.gateway, "ask", "How is espresso brewed?", "-c", name, "-k", "2", "--max-tokens", "48")
    assert done.returncode == 0, done.stderr
    answer, _, sources = done.stdout.rpartition("\n\n")
    assert "[1]" in answer  # the gateway appends the citations it gave the model
    assert sources.splitlines()[0].startswith("[1] coffee.txt #0  (score ")


def test_ask_unknown_collection_is_not_found(stack: Stack) -> None:
    assert_clean_error(run_cli(stack.gateway, "ask", "anything?", "-c", "no-such-collection"), "NOT_FOUND")


def test_health_of_the_running_stack(stack: Stack) -> None:
    layers = {f"STRATA_{name.upper()}_ADDR": address for name, address in stack.layers.items()}
    done = run_cli(stack.gateway, "health", env=layers)
    assert done.returncode == 0, (done.stdout, done.stderr)
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        ("gateway", stack.gateway, "SERVING"),
        *[(name, stack.layers[name], "SERVING") for name in ("inference", "vector", "metadata", "blob")],
    ]


def test_health_of_a_dead_gateway(stack: Stack) -> None:
    dead = f"127.0.0.1:{free_port()}"
    layers = {f"STRATA_{name.upper()}_ADDR": address for name, address in stack.layers.items()}
    done = run_cli(stack.gateway, "--address", dead, "health", env=layers)
    assert done.returncode == 1
    gateway_row = done.stdout.splitlines()[1].split()
    assert gateway_row == ["gateway", dead, "UNREACHABLE", "connection", "refused"]
    assert all(line.split()[2] == "SERVING" for line in done.stdout.splitlines()[2:])
    assert "is it running? try `make run`" in done.stderr


def test_unreachable_gateway_gets_a_hint(stack: Stack) -> None:
    dead = f"127.0.0.1:{free_port()}"
    done = run_cli(dead, "collections", "list")
    assert_clean_error(done, "UNAVAILABLE")
    assert f"no Strata gateway answered at {dead}: is it running? try `make run`" in done.stderr


def test_api_key_from_flag_or_environment(stack: Stack) -> None:
    with serve_gateway(stack.layers, api_keys="s3cret,reader:ro") as (address, _rest):
        assert_clean_error(run_cli(address, "collections", "list"), "UNAUTHENTICATED")
        assert_clean_error(run_cli(address, "collections", "list", "--api-key", "wrong"), "UNAUTHENTICATED")
        assert run_cli(address, "--api-key", "s3cret", "collections", "list").returncode == 0
        assert run_cli(address, "collections", "list", env={"STRATA_API_KEY": "s3cret"}).returncode == 0
        read_only = run_cli(address, "collections", "create", new_name(), env={"STRATA_API_KEY": "reader"})
        assert_clean_error(read_only, "PERMISSION_DENIED")


def test_usage_errors_exit_2(stack: Stack) -> None:
    missing = run_cli(stack.gateway, "search", "tea")
    assert missing.returncode == 2 and "--collection" in missing.stderr
    bad_concurrency = run_cli(stack.gateway, "ingest", ".", "-c", "x", "--concurrency", "0")
    assert bad_concurrency.returncode == 2 and "must be 1..256" in bad_concurrency.stderr


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "gateway.pem", folder / "gateway.key"
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1"
    subprocess.run(
        [*command.split(), "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_tls_gateway_with_a_ca_file(stack: Stack, tmp_path: Path) -> None:
    from gateway.config import GatewaySettings
    from gateway.server import create_server

    cert, key = self_signed_certificate(tmp_path)
    settings = GatewaySettings(
        inference_addr=stack.layers["inference"],
        vector_addr=stack.layers["vector"],
        metadata_addr=stack.layers["metadata"],
        blob_addr=stack.layers["blob"],
        rest_listen="",
        log_level="warning",
        health_probe_seconds=0.2,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    with serve_in_thread(lambda: create_server("127.0.0.1:0", settings)) as address:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(address, credentials) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 30
            while (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                != health_pb2.HealthCheckResponse.SERVING
            ):
                assert time.monotonic() < deadline, "TLS gateway never became SERVING"
                time.sleep(0.1)
        assert run_cli(address, "--tls-ca", str(cert), "collections", "list").returncode == 0
        assert run_cli(address, "collections", "list", env={"STRATA_TLS_CA_FILE": str(cert)}).returncode == 0
        plaintext = run_cli(address, "collections", "list", "--timeout", "5")
        assert_clean_error(plaintext, "UNAVAILABLE")
        assert "if it serves TLS, pass --tls-ca FILE" in plaintext.stderr
        assert "Handshake" not in plaintext.stderr  # grpc core's own logging is silenced
        wrong_ca = run_cli(stack.gateway, "collections", "list", "--tls-ca", str(cert), "--timeout", "5")
        assert_clean_error(wrong_ca, "UNAVAILABLE")
        assert "TLS handshake" in wrong_ca.stderr and "may not serve TLS" in wrong_ca.stderr
        missing = run_cli(address, "collections", "list", "--tls-ca", str(tmp_path / "nope.pem"))
        assert missing.returncode == 2 and missing.stderr.startswith("error: cannot read the TLS CA file")
