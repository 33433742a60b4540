"""Bodies JSON cannot carry, on the routes outside the job API: the OpenAI-compatible routes, the
endpoint settings route (`PUT`/`PATCH /endpoints/{id}`) and the job-log worker route. Each gets
a 400 naming the problem (a number that overflows, a lone surrogate, nesting past the depth
limit), never a 500, and nothing is stored: no job is queued, no setting changes, and a job
whose log post was refused keeps running (logs are a side channel).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from harness import ServerProcess, new_endpoint, status

from neuroq.strict_json import MAX_DEPTH

DEEP = "[" * 1_000 + "]" * 1_000

#: (JSON text with a FIELD placeholder, what the 400 must name)
HOSTILE: dict[str, tuple[str, str]] = {
    "overflow": ('{"FIELD": 1e309}', "FIELD: 1e309 overflows a JSON number"),
    "lone-surrogate": ('{"FIELD": "\\ud800"}', "FIELD: a lone surrogate (\\ud800)"),
    "too-deep": ('{"FIELD": ' + DEEP + "}", f"nesting deeper than {MAX_DEPTH} levels"),
}


def hostile(kind: str, field: str, extra: str = "") -> tuple[bytes, str]:
    """The hostile body of `kind` with its bad value under `field` (after `extra` members),
    and the text its 400 must contain."""
    template, named = HOSTILE[kind]
    body = template.replace("FIELD", field).replace("{", "{" + extra, 1)
    return body.encode(), named.replace("FIELD", field)


@pytest.fixture
def http(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with shared_server.client(timeout_s=30) as client:
        yield client


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize(
    ("route", "extra"),
    [
        ("chat/completions", '"model": "m", "messages": [{"role": "user", "content": "hi"}], '),
        ("completions", '"model": "m", "prompt": "hi", '),
    ],
)
def test_openai_routes_answer_400_naming_the_problem(
    http: httpx.Client, route: str, extra: str, kind: str
) -> None:
    ep = new_endpoint("oa")
    body, named = hostile(kind, "temperature", extra)
    reply = http.post(
        f"/{ep}/openai/v1/{route}", content=body, headers={"Content-Type": "application/json"}
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert named in error["message"] and error["type"] == "invalid_request_error", error
    assert http.get(f"/{ep}/health").json()["jobs"]["inQueue"] == 0


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_endpoint_settings_answer_400_naming_the_problem(
    http: httpx.Client, shared_server: ServerProcess, kind: str
) -> None:
    ep = new_endpoint("cfg")
    settings = f"{shared_server.url}/endpoints/{ep}"
    body, named = hostile(kind, "workersMax")
    reply = http.put(settings, content=body)
    assert reply.status_code == 400 and named in reply.json()["error"], reply.text
    assert http.get(settings).status_code == 404  # nothing was configured
    created = http.put(settings, json={"workersMax": 2})
    assert created.status_code == 201, created.text
    reply = http.patch(settings, content=body)
    assert reply.status_code == 400 and named in reply.json()["error"], reply.text
    assert http.get(settings).json() == created.json()


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_job_log_answers_400_naming_the_problem_and_the_job_runs_on(
    http: httpx.Client, shared_server: ServerProcess, kind: str
) -> None:
    ep = new_endpoint("log")
    job_id = http.post(f"/{ep}/run", json={"input": {}}).json()["id"]
    worker = shared_server.worker_headers
    taken = http.get(f"/{ep}/job-take/w1?job_in_progress=0", headers=worker)
    assert taken.json()["id"] == job_id, taken.text
    body, named = hostile(kind, "truncated", '"lines": [], ')
    reply = http.post(f"/{ep}/job-log/w1/{job_id}", content=body, headers=worker)
    assert reply.status_code == 400, reply.text
    assert named in reply.json()["error"]
    running: dict[str, Any] = status(http, ep, job_id)
    assert running["status"] == "IN_PROGRESS" and running["workerId"] == "w1", running
    assert http.get(f"/{ep}/logs/{job_id}").json()["lines"] == []
