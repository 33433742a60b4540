"""Bad input on the client routes: each case gets the right 4xx with a JSON error that names the
field, and the server keeps serving afterwards.

Most cases need no process and run against the app in this process (`app_client`). Those in
which the HTTP server itself takes part (a body over the limit, a chunked upload, a malformed
Content-Length) go over real HTTP to a real server (`http`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import API_KEY, WORKER_KEY, ServerProcess
from starlette.testclient import TestClient

MB = 1024 * 1024


@pytest.fixture(scope="module")
def http(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with shared_server.client(timeout_s=30) as client:
        yield client


def assert_error(response: httpx.Response, status: int, *words: str) -> None:
    """The reply has `status`, is JSON `{"error": ...}`, and the message contains each word."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def assert_still_serving(client: httpx.Client) -> None:
    reply = client.post("/v-ok/run", json={"input": {"ping": True}})
    assert reply.status_code == 200
    assert reply.json()["status"] == "IN_QUEUE"


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("malformed JSON", b'{"input": ', "not valid JSON"),
    ("empty body", b"", "JSON object"),
    ("NaN is not JSON", b'{"input": NaN}', "not valid JSON"),
    ("not UTF-8", b'{"input": "\xff\xfe"}', "JSON"),
    ("array body", [1, 2], "body must be a JSON object"),
    ("string body", "input", "body must be a JSON object"),
    ("null body", None, "body must be a JSON object"),
    ("missing input", {"inputs": 1}, "input"),
    ("policy not an object", {"input": 1, "policy": [1]}, "policy"),
    (
        "executionTimeout a string",
        {"input": 1, "policy": {"executionTimeout": "9000"}},
        "policy.executionTimeout",
    ),
    (
        "executionTimeout too small",
        {"input": 1, "policy": {"executionTimeout": 4999}},
        "policy.executionTimeout",
    ),
    (
        "executionTimeout too large",
        {"input": 1, "policy": {"executionTimeout": 604800001}},
        "policy.executionTimeout",
    ),
    (
        "executionTimeout fractional",
        {"input": 1, "policy": {"executionTimeout": 6000.5}},
        "policy.executionTimeout",
    ),
    (
        "executionTimeout boolean",
        {"input": 1, "policy": {"executionTimeout": True}},
        "policy.executionTimeout",
    ),
    ("ttl too small", {"input": 1, "policy": {"ttl": 9999}}, "policy.ttl"),
    ("ttl too large", {"input": 1, "policy": {"ttl": 604800001}}, "policy.ttl"),
    ("ttl a list", {"input": 1, "policy": {"ttl": [10000]}}, "policy.ttl"),
    ("lowPriority a string", {"input": 1, "policy": {"lowPriority": "yes"}}, "policy.lowPriority"),
    ("lowPriority a number", {"input": 1, "policy": {"lowPriority": 1}}, "policy.lowPriority"),
    ("webhook a number", {"input": 1, "webhook": 5}, "webhook"),
    ("webhook ftp", {"input": 1, "webhook": "ftp://example.com/x"}, "webhook"),
    ("webhook no host", {"input": 1, "webhook": "http:///path"}, "webhook"),
    ("webhook with space", {"input": 1, "webhook": "http://a b.com/"}, "webhook"),
    ("webhook bad port", {"input": 1, "webhook": "http://example.com:99999/"}, "webhook"),
    ("webhookV2 not a URL", {"input": 1, "webhookV2": "hello"}, "webhookV2"),
    ("s3Config a string", {"input": 1, "s3Config": "bucket"}, "s3Config"),
]


@pytest.mark.parametrize("route", ["run", "runsync"])
@pytest.mark.parametrize(("case", "body", "word"), BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_body_is_400_naming_the_field(
    app_client: TestClient, route: str, case: str, body: Any, word: str
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = app_client.post(
        f"/v-bad/{route}", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(reply, 400, word)


def test_server_still_serves_after_bad_input(app_client: TestClient) -> None:
    for _case, body, _word in BAD_BODIES:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert app_client.post("/v-bad/run", content=content).status_code == 400
    assert_still_serving(app_client)


def test_valid_policy_edges_and_unknown_keys_are_accepted(app_client: TestClient) -> None:
    body = {
        "input": None,
        "policy": {"executionTimeout": 5000, "ttl": 604800000, "lowPriority": True, "x": 1},
        "webhook": "https://example.com/hook?a=1",
        "webhookV2": None,
        "s3Config": {"bucketName": "b"},
        "somethingElse": [1, 2],
    }
    reply = app_client.post("/v-edges/run", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "IN_QUEUE"
    assert "s3Config" not in app_client.get(f"/v-edges/status/{reply.json()['id']}").json()


def test_run_body_over_10_mb_is_413(http: httpx.Client) -> None:
    body = json.dumps({"input": "x" * (10 * MB)}).encode()
    assert_error(http.post("/v-big/run", content=body), 413, "limit")
    assert_still_serving(http)


def test_run_body_over_limit_without_content_length_is_413(http: httpx.Client) -> None:
    """A chunked upload declares no size; the limit is enforced while reading."""

    def chunks() -> Iterator[bytes]:
        yield b'{"input": "'
        for _ in range(11):
            yield b"x" * MB
        yield b'"}'

    assert_error(http.post("/v-big/run", content=chunks()), 413, "limit")
    assert_still_serving(http)


def test_runsync_accepts_15_mb(http: httpx.Client) -> None:
    body = json.dumps({"input": "x" * (15 * MB)}).encode()
    reply = http.post("/v-big/runsync?wait=1000", content=body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "IN_QUEUE"
    assert_error(http.post("/v-big/runsync", content=b" " * (21 * MB)), 413, "limit")


def test_bad_content_length_is_400(http: httpx.Client) -> None:
    # httpx computes Content-Length itself, so send this one on a raw socket.
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(str(http.base_url))
    request = (
        f"POST /v2/v-cl/run HTTP/1.1\r\nHost: {url.hostname}\r\n"
        f"Authorization: {http.headers['authorization']}\r\n"
        "Content-Length: 12, 12\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(request)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.split(b" ", 2)[1].startswith(b"4"), raw


@pytest.mark.parametrize(
    "path",
    ["/bad.id/run", "/bad%20id/health", "/" + "e" * 129 + "/run", "/%C3%A9/purge-queue"],
)
def test_invalid_endpoint_id_is_404(app_client: TestClient, path: str) -> None:
    method = "GET" if path.endswith("health") else "POST"
    reply = app_client.request(method, path, json={"input": 1})
    assert_error(reply, 404, "endpoint")


@pytest.mark.parametrize(
    ("method", "op"),
    [
        ("GET", "status"),
        ("POST", "status"),
        ("GET", "status-sync"),
        ("GET", "stream"),
        ("POST", "stream"),
        ("POST", "cancel"),
        ("POST", "retry"),
    ],
)
@pytest.mark.parametrize("job_id", ["no-such-job", "bad.id"])
def test_unknown_job_is_404(app_client: TestClient, method: str, op: str, job_id: str) -> None:
    reply = app_client.request(method, f"/v-404/{op}/{job_id}")
    assert_error(reply, 404, "not found")


def test_unknown_job_event_stream_is_404_json(app_client: TestClient) -> None:
    reply = app_client.get("/v-404/stream/nope", headers={"Accept": "text/event-stream"})
    assert_error(reply, 404, "not found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v-m/run", "POST"),
        ("PUT", "/v-m/runsync", "POST"),
        ("DELETE", "/v-m/status/x", "GET"),
        ("GET", "/v-m/cancel/x", "POST"),
        ("POST", "/v-m/health", "GET"),
        ("GET", "/v-m/purge-queue", "POST"),
    ],
)
def test_wrong_method_is_405_with_allow(
    app_client: TestClient, method: str, path: str, allowed: str
) -> None:
    reply = app_client.request(method, path)
    assert_error(reply, 405, method, allowed)
    assert allowed in reply.headers["allow"]


def test_unknown_route_is_404_json(app_client: TestClient) -> None:
    assert_error(app_client.get("/v-x/nothing-here"), 404, "no route")
    assert_error(app_client.get("/elsewhere", headers={}), 404, "no route")


@pytest.mark.parametrize(
    ("query", "word"), [("wait=soon", "wait"), ("wait=-5", "wait"), ("wait=1e3", "wait")]
)
def test_bad_wait_is_400(app_client: TestClient, query: str, word: str) -> None:
    assert_error(app_client.post(f"/v-w/runsync?{query}", json={"input": 1}), 400, word)
    job = app_client.post("/v-w/run", json={"input": 1}).json()["id"]
    assert_error(app_client.get(f"/v-w/status/{job}?{query}"), 400, word)
    assert_error(app_client.get(f"/v-w/stream/{job}?{query}"), 400, word)


def test_bad_ttl_and_last_event_id_are_400(app_client: TestClient) -> None:
    job = app_client.post("/v-w/run", json={"input": 1}).json()["id"]
    assert_error(app_client.get(f"/v-w/status/{job}?ttl=never"), 400, "ttl")
    reply = app_client.get(
        f"/v-w/stream/{job}", headers={"Accept": "text/event-stream", "Last-Event-ID": "x"}
    )
    assert_error(reply, 400, "Last-Event-ID")


def test_idempotency_key_too_long_is_400(app_client: TestClient) -> None:
    reply = app_client.post("/v-w/run", json={"input": 1}, headers={"Idempotency-Key": "k" * 300})
    assert_error(reply, 400, "Idempotency-Key")


def test_cancel_retry_purge_ignore_a_body(app_client: TestClient) -> None:
    """RunPod's SDK posts these empty but labelled JSON; garbage must not matter either."""
    job = app_client.post("/v-nb/run", json={"input": 1}).json()["id"]
    junk = {"Content-Type": "application/json"}
    assert (
        app_client.post(f"/v-nb/cancel/{job}", content=b"{not json", headers=junk).json()["status"]
        == "CANCELLED"
    )
    assert_error(
        app_client.post(f"/v-nb/retry/{job}", content=b"[", headers=junk), 400, "CANCELLED"
    )
    reply = app_client.post("/v-nb/purge-queue", content=b"", headers=junk)
    assert reply.json() == {"removed": 0, "status": "completed"}


# -- keys ---------------------------------------------------------------------------------------


def with_headers(
    client: TestClient, method: str, url: str, headers: dict[str, str]
) -> httpx.Response:
    """`method url` with `headers` in place of the client key the client sends by itself (so
    with no key at all when `headers` holds none)."""
    request = client.build_request(method, url, json={"input": 1})
    del request.headers["Authorization"]
    request.headers.update(headers)
    return client.send(request)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "wrong"},
        {"Authorization": f"Bearer {WORKER_KEY}"},  # a worker key is not a client key
        {"Authorization": f"Basic {API_KEY}"},
    ],
)
def test_missing_or_wrong_client_key_is_401(
    app_client: TestClient, headers: dict[str, str]
) -> None:
    for method, path in [
        ("POST", "/auth-ep/run"),
        ("POST", "/auth-ep/runsync"),
        ("GET", "/auth-ep/status/x"),
        ("POST", "/auth-ep/cancel/x"),
        ("POST", "/auth-ep/purge-queue"),
        ("GET", "/auth-ep/health"),
        ("GET", "/bad.ep/health"),  # auth is checked before the endpoint id
    ]:
        reply = with_headers(app_client, method, path, headers)
        assert reply.status_code == 401, (method, path, reply.text)
        assert reply.headers["content-type"] == "application/json"
        assert "key" in reply.json()["error"]
    # The key never appears in an error.
    assert API_KEY not in reply.text


@pytest.mark.parametrize(
    "authorization", [f"Bearer {API_KEY}", f"bearer {API_KEY}", API_KEY, f"Bearer   {API_KEY}"]
)
def test_bearer_and_bare_client_key_work(app_client: TestClient, authorization: str) -> None:
    reply = with_headers(app_client, "GET", "/auth-ep/health", {"Authorization": authorization})
    assert reply.status_code == 200, reply.text


def test_openapi_needs_no_key(app_client: TestClient) -> None:
    reply = with_headers(app_client, "GET", "http://testserver/openapi.json", {})
    assert reply.status_code == 200
    assert reply.json()["openapi"].startswith("3.1")
