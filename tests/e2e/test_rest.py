"""REST/JSON transcoded from the gateway contract: routes, JSON mapping, errors, SSE, OpenAPI, auth."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import Stack, serve_gateway


@pytest.fixture(scope="module")
def rest(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.rest, timeout=60) as client:
        yield client


def new_collection(rest: httpx.Client) -> str:
    name = f"rest-{uuid.uuid4().hex[:8]}"
    reply = rest.post("/v1/collections", json={"name": name, "chunking": {"chunkSizeTokens": 64}})
    assert reply.status_code == 200, reply.text
    return name


def test_collection_lifecycle_over_rest(rest: httpx.Client) -> None:
    name = new_collection(rest)
    got = rest.get(f"/v1/collections/{name}").json()["collection"]
    assert got["name"] == name
    assert got["dimensions"] == 384
    assert got["chunking"]["chunkSizeTokens"] == 64
    assert got["documentCount"] == "0"  # int64 is a string in the proto3 JSON mapping
    put = rest.post(
        f"/v1/collections/{name}/documents",
        json={"document_id": "tea", "text": "Green tea is steamed; black tea is fully oxidised.", "metadata": {"n": 1}},
    )
    assert put.status_code == 200, put.text
    assert put.json()["document"]["status"] == "DOCUMENT_STATUS_READY"
    doc = rest.get(f"/v1/collections/{name}/documents/tea").json()["document"]
    assert doc["metadata"] == {"n": 1}
    found = rest.post(f"/v1/collections/{name}:search", json={"query": "how is black tea made?", "topK": 3}).json()
    assert found["results"][0]["documentId"] == "tea"
    listed = rest.get(f"/v1/collections/{name}/documents", params={"page_size": 1, "status": "DOCUMENT_STATUS_READY"})
    assert [d["id"] for d in listed.json()["documents"]] == ["tea"]
    assert rest.delete(f"/v1/collections/{name}/documents/tea").status_code == 200
    assert rest.get(f"/v1/collections/{name}/documents/tea").status_code == 404
    assert rest.delete(f"/v1/collections/{name}").status_code == 200
    assert rest.get(f"/v1/collections/{name}").status_code == 404


def test_errors_have_http_codes_and_json_body(rest: httpx.Client) -> None:
    missing = rest.get("/v1/collections/does-not-exist")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["status"] == "NOT_FOUND" and error["code"] == 404
    assert "does-not-exist" in error["message"]
    assert error["details"][0]["reason"] == "COLLECTION_NOT_FOUND"

    bad_name = rest.post("/v1/collections", json={"name": "Bad Name!"})
    assert bad_name.status_code == 400 and bad_name.json()["error"]["status"] == "INVALID_ARGUMENT"

    unknown_field = rest.post("/v1/collections", json={"name": "ok-name", "colour": "blue"})
    assert unknown_field.status_code == 400
    assert "colour" in unknown_field.json()["error"]["message"]

    not_json = rest.post("/v1/collections", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 400
    for constant in (b"NaN", b"Infinity", b"-Infinity"):  # Python's parser takes them; JSON has none
        body = b'{"document_id": "x", "text": "owls", "metadata": {"n": ' + constant + b"}}"
        reply = rest.post("/v1/collections/any/documents", content=body, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["details"][0]["reason"] == "BAD_JSON", reply.text

    name = new_collection(rest)
    duplicate = rest.post("/v1/collections", json={"name": name})
    assert duplicate.status_code == 409 and duplicate.json()["error"]["status"] == "ALREADY_EXISTS"

    assert rest.get("/v1/nothing-here").status_code == 404
    assert rest.put(f"/v1/collections/{name}").status_code == 405
    bad_query = rest.get("/v1/collections", params={"page_size": "many"})
    assert bad_query.status_code == 400


def test_query_parameters_page_through_collections(rest: httpx.Client) -> None:
    names = sorted(new_collection(rest) for _ in range(3))
    seen: list[str] = []
    token = ""
    while True:
        page = rest.get("/v1/collections", params={"page_size": 2, "page_token": token}).json()
        seen += [c["name"] for c in page["collections"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert set(names) <= set(seen)
    assert seen == sorted(seen)


def test_body_size_limit(stack: Stack) -> None:
    with serve_gateway(stack.layers, rest_max_body_bytes=2048) as (_grpc, base):
        reply = httpx.post(f"{base}/v1/collections", content=b"{" + b" " * 4096 + b"}", timeout=30)
    assert reply.status_code == 413
    assert reply.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_ask_as_server_sent_events_not_found_path(rest: httpx.Client) -> None:
    name = new_collection(rest)
    rest.post(f"/v1/collections/{name}/documents", json={"document_id": "d", "text": "Owls hunt at night."})
    events: list[tuple[str, dict]] = []
    with rest.stream(
        "POST",
        f"/v1/collections/{name}:ask",
        json={"question": "What is the capital of Peru?", "options": {"minScore": 0.99}},
        headers={"accept": "text/event-stream"},
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in reply.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    kinds = [e for e, _ in events]
    assert kinds[0] == "sources" and kinds[-1] == "done"
    assert events[0][1]["sources"].get("found", False) is False
    answer = "".join(payload["delta"] for kind, payload in events if kind == "delta")
    assert "could not find" in answer


def test_openapi_and_docs(rest: httpx.Client) -> None:
    spec = rest.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    operations = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    assert {"CreateCollection", "PutDocument", "Search", "Ask", "ListDocuments"} <= operations
    search = spec["paths"]["/v1/collections/{collection}:search"]["post"]
    assert "relevant" in search["description"]
    assert "text/html" in rest.get("/docs").headers["content-type"]


def test_api_keys_over_rest_and_grpc(stack: Stack) -> None:
    import grpc

    from strata.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    with serve_gateway(stack.layers, api_keys="writer-key,reader-key:ro") as (address, base):
        assert httpx.get(f"{base}/v1/collections").status_code == 401
        bad = httpx.get(f"{base}/v1/collections", headers={"authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["status"] == "UNAUTHENTICATED"
        reader = {"authorization": "Bearer reader-key"}
        writer = {"authorization": "Bearer writer-key"}
        assert httpx.get(f"{base}/v1/collections", headers=reader).status_code == 200
        denied = httpx.post(f"{base}/v1/collections", json={"name": "nope"}, headers=reader)
        assert denied.status_code == 403 and denied.json()["error"]["status"] == "PERMISSION_DENIED"
        name = f"keyed-{uuid.uuid4().hex[:6]}"
        assert httpx.post(f"{base}/v1/collections", json={"name": name}, headers=writer, timeout=30).status_code == 200

        with grpc.insecure_channel(address) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetCollection(gateway_pb2.GetCollectionRequest(name=name))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            got = stub.GetCollection(
                gateway_pb2.GetCollectionRequest(name=name), metadata=[("authorization", "Bearer reader-key")]
            )
            assert got.collection.name == name
            with pytest.raises(grpc.RpcError) as caught:
                stub.DeleteCollection(
                    gateway_pb2.DeleteCollectionRequest(name=name), metadata=[("authorization", "Bearer reader-key")]
                )
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_rate_limit_returns_429_with_retry_after(stack: Stack) -> None:
    with serve_gateway(stack.layers, rate_limit_per_second=0.5, rate_limit_burst=2) as (_address, base):
        codes = [httpx.get(f"{base}/v1/collections").status_code for _ in range(3)]
        assert codes[:2] == [200, 200]
        limited = httpx.get(f"{base}/v1/collections")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_sse_client_disconnect_cancels_generation(rest: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import time

    caplog.set_level(logging.INFO, logger="strata.access")
    name = new_collection(rest)
    rest.post(f"/v1/collections/{name}/documents", json={"document_id": "d", "text": "Owls hunt at night, silently."})
    with rest.stream(
        "POST",
        f"/v1/collections/{name}:ask",
        json={"question": "When do owls hunt?", "options": {"maxTokens": 400, "minScore": -1}},
        headers={"accept": "text/event-stream"},
    ) as reply:
        assert reply.status_code == 200
        for line in reply.iter_lines():
            if line.startswith("event: delta"):
                break  # one token is enough: hang up mid-answer
    deadline = time.monotonic() + 20
    while True:
        cancelled = [
            r
            for r in caplog.records
            if getattr(r, "method", "") == "/strata.inference.v1.InferenceService/GenerateStream"
            and getattr(r, "code", "") == "CANCELLED"
        ]
        if cancelled:
            break
        assert time.monotonic() < deadline, "generation was not cancelled after the client hung up"
        time.sleep(0.1)
