"""Payloads JSON cannot carry, against a real `neuroq serve` and real `neuroq worker` processes.

A client that submits a number overflowing to infinity, a lone surrogate or nesting past the
depth limit gets a 400 naming the field, and nothing is queued: stored, such a job could never
be delivered. A handler that returns, streams or reports progress that cannot be encoded ends
its job FAILED at once, with an error naming what was wrong; it is not retried as a lost
worker, and the worker process lives on to take the next job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import ServerProcess, WorkerProcess, start_server, start_worker, status, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HANDLERS = """
from neuroq.worker.runtime import progress_update


def bad(kind):
    if kind == "inf":
        return {"x": float("inf")}
    if kind == "surrogate":
        return {"text": "ab\\ud800"}
    if kind.startswith("deep"):
        value = []
        for _ in range(int(kind[4:])):
            value = [value]
        return {"deep": value}
    if kind == "object":
        return {"obj": object()}
    return {"ok": kind}


def returns(job):
    return bad(job["input"]["kind"])


def streams(job):
    yield {"i": 0}
    yield bad(job["input"]["kind"])


def progress(job):
    progress_update(job, bad(job["input"]["kind"]))
    return {"done": True}
"""

#: handler function -> endpoint it serves
ENDPOINTS = {"returns": "hj-returns", "streams": "hj-streams", "progress": "hj-progress"}

#: what each bad value's error says, naming where it is
PROBLEMS = {
    "inf": "output.x: inf is not a finite number",
    "surrogate": "output.text: a lone surrogate (\\ud800) is not valid Unicode",
    "deep1000": "output: nesting deeper than 100 levels",
    "deep100000": "output: nesting deeper than 100 levels",
    "object": "output.obj: a value of type object cannot be written as JSON",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """A server (2 s worker-lost limit, so a stranded job would show up) and one worker per
    handler in HANDLERS."""
    tmp = tmp_path_factory.mktemp("hostile-json")
    (tmp / "hostile.py").write_text(HANDLERS)
    server = start_server(
        tmp / "srv",
        NEUROQ_WORKER_LOST_S="2",
        NEUROQ_JOB_TAKE_HOLD_S="1",
        NEUROQ_JOB_STOP_HOLD_S="1",
    )
    workers: list[WorkerProcess] = []
    try:
        for func, endpoint in ENDPOINTS.items():
            workers.append(
                start_worker(
                    server, f"{tmp / 'hostile.py'}:{func}", endpoint, tmp, "--ping-interval", "0.5"
                )
            )
        yield server, tmp
        for worker in workers:
            assert worker.proc.poll() is None, f"worker died:\n{worker.log()[-3000:]}"
            # Handler exceptions are logged with their traceback; these mean our code broke.
            for sign in ("RecursionError", "UnicodeEncodeError", "never retrieved", "crashed"):
                assert sign not in worker.log(), worker.log()[-3000:]
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


@pytest.fixture
def http(stack: tuple[ServerProcess, Path]) -> Iterator[httpx.Client]:
    server = stack[0]
    with httpx.Client(base_url=server.base_url, headers=server.client_headers, timeout=30) as c:
        yield c


def wait_done(http: httpx.Client, endpoint: str, job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: status(http, endpoint, job_id),
        20,
        f"job {job_id} to end",
        0.05,
        until=lambda body: body["status"] not in ("IN_QUEUE", "IN_PROGRESS"),
    )


def deep_body(depth: int) -> bytes:
    """A /run body whose input nests `depth` levels (the body itself one more)."""
    return b'{"input": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("route", ["run", "runsync"])
@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"input": {"x": 1e309}}', "input.x: 1e309 overflows a JSON number"),
        (b'{"input": {"x": [1, -1e400]}}', "input.x[1]: -1e400 overflows a JSON number"),
        (b'{"input": {"x": Infinity}}', "input.x: Infinity is not valid JSON"),
        (b'{"input": {"x": "\\ud800"}}', "input.x: a lone surrogate (\\ud800)"),
        (b'{"input": {"x": "\xed\xa0\x80"}}', "body: not valid UTF-8"),
        (deep_body(100), "input: nesting deeper than 100 levels"),
        (deep_body(1_000), "input: nesting deeper than 100 levels"),
        (deep_body(100_000), "input: nesting deeper than 100 levels"),
    ],
    ids=[
        *("overflow", "overflow-in-list", "infinity", "surrogate", "utf8-surrogate"),
        *("deep101", "deep1000", "deep100000"),
    ],
)
def test_client_gets_400_naming_the_field_and_nothing_is_queued(
    http: httpx.Client, route: str, body: bytes, error: str
) -> None:
    endpoint = "hj-client"
    before = http.get(f"/{endpoint}/health").json()
    reply = http.post(
        f"/{endpoint}/{route}", content=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"].startswith(error), reply.json()
    assert http.get(f"/{endpoint}/health").json() == before


def test_the_deepest_input_allowed_is_accepted(http: httpx.Client) -> None:
    reply = http.post("/hj-client-ok/run", content=deep_body(99))
    assert reply.status_code == 200, reply.text
    http.post("/hj-client-ok/purge-queue")


def test_dashboard_playground_refuses_what_json_cannot_carry(
    stack: tuple[ServerProcess, Path], http: httpx.Client
) -> None:
    server = stack[0]
    endpoint = "hj-playground"
    before = http.get(f"/{endpoint}/health").json()
    with httpx.Client(base_url=server.url, timeout=30) as ui:
        assert ui.post("/login", data={"key": server.api_key, "next": "/"}).status_code == 303
        page = ui.get("/playground").text
        token = re.search(r'<meta name="csrf-token" content="([0-9a-f]*)">', page)
        assert token is not None
        headers = {"X-CSRF-Token": token.group(1), "Content-Type": "application/json"}
        cases = [
            ('"extra": "{\\"t\\": 1e309}"', "extra.t: 1e309 overflows a JSON number"),
            ('"extra": "{\\"t\\": NaN}"', "extra.t: NaN is not valid JSON"),
            ('"extra": "' + "[" * 200 + '"', "extra[0]: nesting deeper than 100 levels"),
            ('"temperature": 1e309', "temperature: 1e309 overflows"),
            ('"prompt": "\\udc00"', "prompt: a lone surrogate (\\udc00)"),
        ]
        for field, error in cases:
            body = f'{{"endpoint_id": "{endpoint}", "prompt": "hi", {field}}}'
            reply = ui.post("/ui/playground", content=body.encode(), headers=headers)
            assert reply.status_code == 400, (field, reply.text)
            assert reply.json()["error"].startswith(error), (field, reply.json())
    assert http.get(f"/{endpoint}/health").json() == before


@pytest.mark.parametrize("kind", list(PROBLEMS))
def test_unencodable_result_fails_the_job_once_saying_why(http: httpx.Client, kind: str) -> None:
    endpoint = ENDPOINTS["returns"]
    status = wait_done(
        http, endpoint, http.post(f"/{endpoint}/run", json={"input": {"kind": kind}}).json()["id"]
    )
    assert status["status"] == "FAILED", status
    assert "retries" not in status, status  # failed at once, not retried as a lost worker
    assert status["error"].startswith("handler output is not JSON-encodable: "), status
    assert PROBLEMS[kind] in status["error"], status
    # The worker lives on.
    ok = http.post(f"/{endpoint}/runsync", json={"input": {"kind": "fine"}}).json()
    assert wait_done(http, endpoint, ok["id"])["output"] == {"ok": "fine"}


@pytest.mark.parametrize("kind", list(PROBLEMS))
def test_unencodable_stream_chunk_fails_the_job_saying_why(http: httpx.Client, kind: str) -> None:
    endpoint = ENDPOINTS["streams"]
    job_id = http.post(f"/{endpoint}/run", json={"input": {"kind": kind}}).json()["id"]
    status = wait_done(http, endpoint, job_id)
    assert status["status"] == "FAILED", status
    assert "retries" not in status, status
    assert status["error"].startswith("stream chunk 1 is not JSON-encodable: "), status
    assert PROBLEMS[kind] in status["error"], status


@pytest.mark.parametrize("kind", list(PROBLEMS))
def test_unencodable_progress_fails_the_job_saying_why(http: httpx.Client, kind: str) -> None:
    endpoint = ENDPOINTS["progress"]
    job_id = http.post(f"/{endpoint}/run", json={"input": {"kind": kind}}).json()["id"]
    status = wait_done(http, endpoint, job_id)
    assert status["status"] == "FAILED", status
    assert "retries" not in status, status
    # The handler got the error from progress_update and, not catching it, failed with it.
    error = json.loads(status["error"])
    assert error["error_type"] in (
        "<class 'neuroq.strict_json.JSONRejected'>",
        "<class 'neuroq.strict_json.JSONTypeRejected'>",  # the TypeError kind, for an object()
    ), status
    assert error["error_message"].startswith("progress_update: " + PROBLEMS[kind]), status
