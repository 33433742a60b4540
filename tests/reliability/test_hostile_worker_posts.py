"""Worker posts that are not strict JSON get a 4xx naming the problem, never a 500.

A 500 on job-done makes an SDK worker post the same body again (it retries 5xx), and the job
would sit IN_PROGRESS until its execution timeout. So every body the server cannot store, from
the job's holder, answers 400 and ends the job FAILED with the reason, once: numbers that
overflow (`1e309`), lone surrogates, nesting past the documented limit (100 levels), including
the 100,000-deep bodies that used to raise RecursionError.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from harness import SDK_POST_HEADERS, ServerProcess, new_endpoint, status

from neuroq.strict_json import MAX_DEPTH

HOSTILE: dict[str, tuple[bytes, str]] = {
    "overflow": (b'{"output": {"loss": 1e309}}', "output.loss"),
    "negative-overflow": (b'{"output": [-1e400]}', "output[0]"),
    "lone-surrogate": (b'{"output": "\\ud800"}', "surrogate"),
    "too-deep": (b'{"output": ' + b"[" * 1_000 + b"]" * 1_000 + b"}", f"{MAX_DEPTH}"),
    "very-deep": (b"[" * 100_000 + b"]" * 100_000, f"{MAX_DEPTH}"),
}


@pytest.fixture
def http(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    """A client for the client routes; worker calls pass the worker key themselves."""
    with shared_server.client(timeout_s=30) as client:
        yield client


def running(http: httpx.Client, server: ServerProcess) -> tuple[str, str]:
    ep = new_endpoint()
    reply = http.post(f"/{ep}/run", json={"input": {}})
    assert reply.status_code == 200, reply.text
    reply = http.get(f"/{ep}/job-take/w1?job_in_progress=0", headers=server.worker_headers)
    assert reply.status_code == 200, reply.text
    return ep, str(reply.json()["id"])


@pytest.mark.parametrize("route", ["job-done", "job-stream"])
@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_result_is_refused_and_fails_the_job_once(
    http: httpx.Client, shared_server: ServerProcess, route: str, kind: str
) -> None:
    body, named = HOSTILE[kind]
    ep, job_id = running(http, shared_server)
    headers = {**shared_server.worker_headers, **SDK_POST_HEADERS}
    reply = http.post(f"/{ep}/{route}/w1/{job_id}?isStream=false", content=body, headers=headers)
    assert reply.status_code == 400, reply.text
    assert named in reply.json()["error"]
    ended = status(http, ep, job_id)
    assert ended["status"] == "FAILED" and named in ended["error"]
    # the SDK's retry of the same body changes nothing and is not a 5xx either
    again = http.post(f"/{ep}/{route}/w1/{job_id}?isStream=false", content=body, headers=headers)
    assert again.status_code == 400
    assert status(http, ep, job_id) == ended


def test_hostile_progress_and_batch_get_400(
    http: httpx.Client, shared_server: ServerProcess
) -> None:
    ep, job_id = running(http, shared_server)
    headers = shared_server.worker_headers
    progress = b'{"status": "IN_PROGRESS", "output": {"pct": 1e309}}'
    reply = http.post(f"/{ep}/job-done/w1/{job_id}", content=progress, headers=headers)
    assert reply.status_code == 400 and "output.pct" in reply.json()["error"]
    assert status(http, ep, job_id)["status"] == "FAILED"
    deep = b"[" * 100_000 + b"]" * 100_000
    reply = http.post(f"/{ep}/job-done-batch/w1", content=deep, headers=headers)
    assert reply.status_code == 400 and str(MAX_DEPTH) in reply.json()["error"]
