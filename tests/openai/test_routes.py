"""The OpenAI routes as raw HTTP: the server-sent events of a streamed chat in order (role,
content, finish, `[DONE]`), each request a job visible in `/status` with exactly the
`openai_route`/`openai_input` input, OpenAI's error shape for 400, 401 and 404, a client that
disconnects cancelling its job (streaming or not, and an official `openai` client closing its
stream), 429 while the queue is over its limit, and 504 when a job runs past the endpoint's
executionTimeout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import harness
import httpx
import openai
import pytest
from harness import ServerProcess, read_events, wait_for
from openai_harness import base_url, client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHAT = {
    "model": "default",
    "messages": [{"role": "user", "content": "こんにちは"}],
    "max_tokens": 12,
    "temperature": 0,
}


def http(server: ServerProcess, endpoint: str, timeout_s: float = 60) -> httpx.Client:
    return httpx.Client(
        base_url=base_url(server, endpoint), headers=server.client_headers, timeout=timeout_s
    )


def job_status(server: ServerProcess, endpoint: str, job_id: str) -> dict[str, Any]:
    with server.client() as jobs:
        return harness.status(jobs, endpoint, job_id)


def test_raw_stream_sends_role_content_finish_then_done(
    openai_server: ServerProcess, neuroq_ep: str
) -> None:
    body = {**CHAT, "stream": True}
    with (
        http(openai_server, neuroq_ep) as api,
        api.stream("POST", "/chat/completions", json=body) as reply,
    ):
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        job_id = reply.headers["x-request-id"]
        events = list(read_events(reply))
    data = [e["data"] for e in events]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks
    )
    deltas = [c["choices"][0]["delta"] for c in chunks]
    reasons = [c["choices"][0]["finish_reason"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert all(set(d) == {"content"} and d["content"] for d in deltas[1:-1])
    assert deltas[-1] == {} and reasons[-1] in ("stop", "length") and not any(reasons[:-1])

    # The request was a job like any other; its output is what the handler yielded.
    status = job_status(openai_server, neuroq_ep, job_id)
    assert status["status"] == "COMPLETED"
    assert "".join(status["output"]).endswith("data: [DONE]\n\n")


def test_the_job_input_is_exactly_the_route_and_the_body(
    openai_server: ServerProcess, tmp_path: Path
) -> None:
    """No worker: the job waits in the queue, and a raw take shows what a worker receives."""
    endpoint = harness.new_endpoint("oa")
    body = {"model": "m", "prompt": "p", "max_tokens": 3}
    reply: dict[str, Any] = {}

    def call() -> None:
        with http(openai_server, endpoint, timeout_s=30) as api:
            reply["r"] = api.post("/completions", json=body)

    background = harness.Background(call)
    worker = harness.RawWorker(openai_server, endpoint)
    job = worker.take()
    assert job["input"] == {"openai_route": "/v1/completions", "openai_input": body}
    result = {"id": "x", "object": "text_completion", "choices": [{"text": "ok", "index": 0}]}
    worker.done(job["id"], {"output": [result]})
    background.join(30)
    assert reply["r"].status_code == 200 and reply["r"].json() == result
    assert reply["r"].headers["x-request-id"] == job["id"]
    worker.close()


def test_errors_have_openai_shape(openai_server: ServerProcess, neuroq_ep: str) -> None:
    with http(openai_server, neuroq_ep) as api:
        bad = api.post("/chat/completions", json={**CHAT, "top_p": 7})
        missing = api.post("/chat/completions", json={"messages": CHAT["messages"]})
        unknown = api.post("/chat/completions", json={**CHAT, "model": "nope"})
        not_json = api.post("/completions", content=b"{", headers={"content-type": "text/plain"})
        stranger = api.get("/models", headers={"Authorization": "Bearer wrong"})
    for reply, status, param in [
        (bad, 400, "top_p"),
        (missing, 400, "model"),
        (unknown, 404, "model"),
        (not_json, 400, None),
        (stranger, 401, None),
    ]:
        assert reply.status_code == status, reply.text
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param and error["message"]
    assert stranger.json()["error"]["code"] == "invalid_api_key"


def test_streamed_error_before_any_chunk_keeps_its_status(
    openai_server: ServerProcess, neuroq_ep: str
) -> None:
    with http(openai_server, neuroq_ep) as api:
        reply = api.post("/chat/completions", json={**CHAT, "stream": True, "n": 99})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "n"


def test_disconnecting_mid_stream_cancels_the_job(
    openai_server: ServerProcess, fake_ep: str
) -> None:
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "slow"}],
        "stream": True,
    }
    with (
        http(openai_server, fake_ep) as api,
        api.stream("POST", "/chat/completions", json=body) as reply,
    ):
        job_id = reply.headers["x-request-id"]
        first = next(read_events(reply))
        assert json.loads(first["data"])["choices"][0]["delta"]["role"] == "assistant"
    wait_for(
        lambda: job_status(openai_server, fake_ep, job_id)["status"],
        10,
        "the job to be cancelled",
        until=lambda s: s == "CANCELLED",
    )


def test_closing_an_openai_client_stream_cancels_the_job(
    openai_server: ServerProcess, fake_ep: str
) -> None:
    """The official client breaks off after the first chunk of a reply that would take 10 s."""
    slow: Any = [{"role": "user", "content": "slow"}]
    with client(openai_server, fake_ep) as api:
        stream = api.chat.completions.create(model="fake-model", messages=slow, stream=True)
        job_id = stream.response.headers["x-request-id"]
        first = next(iter(stream))
        assert first.choices[0].delta.role == "assistant"
        stream.close()
    wait_for(
        lambda: job_status(openai_server, fake_ep, job_id)["status"],
        8,
        "the job to be cancelled",
        until=lambda s: s == "CANCELLED",
    )


def test_disconnecting_while_waiting_cancels_the_job(
    openai_server: ServerProcess, fake_ep: str
) -> None:
    """The fake worker holds a `hang` request for 60 s; the client gives up after 1.5 s, and
    its job must not be left running."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hang"}]}
    with http(openai_server, fake_ep, timeout_s=1.5) as api, pytest.raises(httpx.ReadTimeout):
        api.post("/chat/completions", json=body)
    wait_for(
        lambda: live_jobs(openai_server, fake_ep),
        10,
        "the job to be cancelled",
        until=lambda n: n == 0,
    )


def live_jobs(server: ServerProcess, endpoint: str) -> int:
    with server.client() as jobs:
        counts = jobs.get(f"/{endpoint}/health").json()["jobs"]
    return int(counts["inProgress"] + counts["inQueue"])


def test_a_full_queue_answers_429(tmp_path: Path) -> None:
    server = harness.start_server(tmp_path / "server", NEUROQ_OPENAI_MAX_QUEUED="1")
    try:
        endpoint = harness.new_endpoint("full")
        with server.client() as jobs:
            harness.submit(jobs, endpoint)  # no worker: it stays queued
        with client(server, endpoint) as api, pytest.raises(openai.RateLimitError) as caught:
            api.models.list()
        assert caught.value.response.headers["retry-after"] == "1"
        assert caught.value.code == "rate_limit_exceeded"
    finally:
        server.stop()


def test_execution_timeout_answers_504(openai_server: ServerProcess, fake_ep: str) -> None:
    with openai_server.client() as jobs:
        settings = jobs.put(
            f"{openai_server.url}/endpoints/{fake_ep}", json={"executionTimeout": 5000}
        )
        assert settings.status_code in (200, 201), settings.text
    try:
        body: Any = [{"role": "user", "content": "hang"}]
        with client(openai_server, fake_ep) as api, pytest.raises(openai.InternalServerError) as e:
            api.chat.completions.create(model="fake-model", messages=body)
        assert e.value.status_code == 504
        assert "executionTimeout" in e.value.message
    finally:
        with openai_server.client() as jobs:
            jobs.delete(f"{openai_server.url}/endpoints/{fake_ep}")
