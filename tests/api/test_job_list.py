"""`GET /v2/jobs`, the JSON job list (neuroq.api.job_list), in process: filters, paging, the
summary's fields, the client key and bad parameters."""

from __future__ import annotations

from typing import Any

import pytest
from harness import WORKER_KEY, new_endpoint
from starlette.testclient import TestClient


def submit(client: TestClient, ep: str, value: Any = 1) -> str:
    reply = client.post(f"/{ep}/run", json={"input": value})
    assert reply.status_code == 200, reply.text
    job_id: str = reply.json()["id"]
    return job_id


def test_lists_an_endpoints_jobs_newest_first_without_inputs_or_outputs(
    app_client: TestClient,
) -> None:
    ep, other = new_endpoint("list"), new_endpoint("list")
    ids = [submit(app_client, ep, {"big": "x" * 1000}) for _ in range(3)]
    submit(app_client, other)
    reply = app_client.get("/jobs", params={"endpoint": ep})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [row["id"] for row in body["jobs"]] == ids[::-1]
    assert body["nextOffset"] is None and body["offset"] == 0 and body["limit"] == 50
    row = body["jobs"][0]
    assert row["endpointId"] == ep and row["status"] == "IN_QUEUE"
    assert isinstance(row["createdAt"], int) and row["startedAt"] is None
    assert "input" not in row and "output" not in row


def test_pages_with_limit_and_next_offset(app_client: TestClient) -> None:
    ep = new_endpoint("page")
    ids = [submit(app_client, ep, n) for n in range(5)][::-1]
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        body = app_client.get("/jobs", params={"endpoint": ep, "limit": 2, "offset": offset})
        page = body.json()
        seen += [row["id"] for row in page["jobs"]]
        offset = page["nextOffset"]
    assert seen == ids


def test_filters_by_state_and_cuts_long_errors(app_client: TestClient) -> None:
    ep = new_endpoint("state")
    failing = submit(app_client, ep)
    submit(app_client, ep)
    worker = {"Authorization": WORKER_KEY}
    taken = app_client.get(f"/{ep}/job-take/w-list", headers=worker).json()
    assert taken["id"] == failing
    done = app_client.post(
        f"/{ep}/job-done/w-list/{failing}", json={"error": "e" * 1000}, headers=worker
    )
    assert done.status_code == 200, done.text
    failed = app_client.get("/jobs", params={"endpoint": ep, "status": "FAILED"}).json()["jobs"]
    assert [row["id"] for row in failed] == [failing]
    assert failed[0]["workerId"] == "w-list" and failed[0]["startedAt"] is not None
    assert 100 < len(failed[0]["error"]) <= 300 and failed[0]["error"].endswith("…")
    queued = app_client.get("/jobs", params={"endpoint": ep, "status": "IN_QUEUE"}).json()
    assert len(queued["jobs"]) == 1


def test_without_an_endpoint_lists_every_endpoint(app_client: TestClient) -> None:
    a, b = new_endpoint("all"), new_endpoint("all")
    ids = {submit(app_client, a), submit(app_client, b)}
    rows = app_client.get("/jobs", params={"limit": 500}).json()["jobs"]
    assert ids <= {row["id"] for row in rows}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"status": "DONE"}, "status must be one of"),
        ({"limit": "0"}, "limit must be"),
        ({"limit": "501"}, "limit must be"),
        ({"offset": "-1"}, "offset must be"),
        ({"endpoint": "a b"}, "endpoint must be"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    app_client: TestClient, params: dict[str, str], message: str
) -> None:
    reply = app_client.get("/jobs", params=params)
    assert reply.status_code == 400
    assert message in reply.text


def test_needs_the_client_key(app_client: TestClient) -> None:
    assert app_client.get("/jobs", headers={"Authorization": WORKER_KEY}).status_code == 401
