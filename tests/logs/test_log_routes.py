"""POST job-log (worker key, fenced) and GET logs (client key) on the app in this process."""

from __future__ import annotations

from typing import Any

from harness import WORKER_KEY, new_endpoint
from starlette.testclient import TestClient

W = {"Authorization": WORKER_KEY}


def running_job(client: TestClient, ep: str, worker: str = "w1") -> dict[str, Any]:
    reply = client.post(f"/{ep}/run", json={"input": {}})
    assert reply.status_code == 200, reply.text
    taken = client.get(f"/{ep}/job-take/{worker}?job_in_progress=0", headers=W)
    assert taken.status_code == 200, taken.text
    job: dict[str, Any] = taken.json()
    assert job["id"] == reply.json()["id"]
    return job


def post_log(
    client: TestClient, ep: str, worker: str, job_id: str, body: Any, attempt: int | None = 0
) -> Any:
    query = "" if attempt is None else f"?attempt={attempt}"
    return client.post(f"/{ep}/job-log/{worker}/{job_id}{query}", json=body, headers=W)


def test_the_holders_lines_come_back_in_order_and_page_by_seq(app_client: TestClient) -> None:
    ep = new_endpoint()
    job = running_job(app_client, ep)
    lines = [
        {"at": 1_700_000_000_000, "level": "info", "line": "loading <model>"},
        {"line": "Traceback (most recent call last):\n  ValueError: boom"},
    ]
    reply = post_log(app_client, ep, "w1", job["id"], {"lines": lines})
    assert reply.status_code == 200 and reply.json() == {"stored": 2}
    body = app_client.get(f"/{ep}/logs/{job['id']}").json()
    assert body["status"] == "IN_PROGRESS" and body["truncated"] is False
    assert [(x["seq"], x["attempt"], x["level"], x["line"]) for x in body["lines"]] == [
        (1, 0, "INFO", "loading <model>"),
        (2, 0, "INFO", "Traceback (most recent call last):\n  ValueError: boom"),
    ]
    assert body["lines"][0]["at"] == 1_700_000_000_000 and body["nextAfter"] == 2
    after = app_client.get(f"/{ep}/logs/{job['id']}?after=1").json()
    assert [x["seq"] for x in after["lines"]] == [2]
    none_new = app_client.get(f"/{ep}/logs/{job['id']}?after=2").json()
    assert none_new["lines"] == [] and none_new["nextAfter"] == 2


def test_strangers_and_other_attempts_are_ignored_with_200(app_client: TestClient) -> None:
    ep = new_endpoint()
    job = running_job(app_client, ep)
    line = {"lines": [{"line": "zombie"}]}
    stranger = post_log(app_client, ep, "w2", job["id"], line, attempt=None)
    assert stranger.status_code == 200 and "held by another worker" in stranger.json()["ignored"]
    old_attempt = post_log(app_client, ep, "w1", job["id"], line, attempt=3)
    assert old_attempt.status_code == 200 and "ignored" in old_attempt.json()
    assert app_client.get(f"/{ep}/logs/{job['id']}").json()["lines"] == []


def test_bad_bodies_are_refused_and_fail_nothing(app_client: TestClient) -> None:
    ep = new_endpoint()
    job = running_job(app_client, ep)
    for body, words in [
        ({"lines": "x"}, "`lines` must be an array"),
        ({"lines": [{"line": 5}]}, "lines[0] must be an object with a string `line`"),
        ({"lines": [{"line": "x", "at": -1}]}, "lines[0].at"),
        ({"lines": [], "truncated": "yes"}, "`truncated`"),
    ]:
        reply = post_log(app_client, ep, "w1", job["id"], body)
        assert reply.status_code == 400 and words in reply.json()["error"], reply.text
    assert app_client.get(f"/{ep}/status/{job['id']}").json()["status"] == "IN_PROGRESS"
    assert post_log(app_client, ep, "w1", "nope", {"lines": []}).status_code == 404


def test_caps_cut_long_lines_and_mark_the_truncation(app_client: TestClient) -> None:
    ep = new_endpoint()
    job = running_job(app_client, ep)
    long = {"lines": [{"line": "x" * 20_000}]}
    assert post_log(app_client, ep, "w1", job["id"], long).json() == {"stored": 1}
    many = {"lines": [{"line": f"line {i}"} for i in range(1_000)]}
    assert post_log(app_client, ep, "w1", job["id"], many).json() == {"stored": 1_000}
    body = app_client.get(f"/{ep}/logs/{job['id']}?limit=5000").json()
    assert body["truncated"] is True
    assert len(body["lines"]) == 1_001
    assert len(body["lines"][0]["line"]) <= 8 * 1024
    assert body["lines"][0]["line"].endswith("characters cut)")
    assert body["lines"][-1]["level"] == "TRUNCATED"
    assert body["lines"][-2]["line"] == "line 998"


def test_the_client_route_needs_the_client_key_and_a_retained_job(app_client: TestClient) -> None:
    ep = new_endpoint()
    job = running_job(app_client, ep)
    assert app_client.get(f"/{ep}/logs/{job['id']}", headers=W).status_code == 401
    assert app_client.get(f"/{ep}/logs/unknown-job").status_code == 404
    assert app_client.get(f"/other-{ep}/logs/{job['id']}").status_code == 404
    assert app_client.get(f"/{ep}/logs/{job['id']}?after=x").status_code == 400
