"""RunPod compatibility, client side (spec section 4): the official `runpod` 1.12 clients
(`runpod.Endpoint`, `runpod.AsyncioEndpoint`), the users' guide `requests` loop and raw HTTP,
against a real server whose jobs are run by unmodified SDK workers.

One server and four SDK workers serve the whole module, one worker per endpoint:
c-async (async handler, `input.op` picks the behaviour), c-sync (blocking sync handler),
c-gen (sync generator with aggregation) and c-agen (async generator, no aggregation).
Case numbers in docstrings refer to spec section 4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import runpod
from harness import start_server, wait_for
from sdk_harness import (
    Api,
    CountingProxy,
    SdkWorker,
    WebhookReceiver,
    start_sdk_worker,
)

ASYNC, SYNC, GEN, AGEN = "c-async", "c-sync", "c-gen", "c-agen"
#: an endpoint no worker serves, for jobs that must stay queued
IDLE = "c-idle"
SCRIPTS = {
    ASYNC: "async_worker.py",
    SYNC: "sync_worker.py",
    GEN: "generator_worker.py",
    AGEN: "async_generator_worker.py",
}
MB = 1024 * 1024
#: the server's runsync default wait, lowered from 90 s so case 3 is quick
RUNSYNC_DEFAULT_WAIT_MS = 3000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = start_server(
        tmp_path_factory.mktemp("compat-client"),
        NEUROQ_JOB_TAKE_HOLD_S="2",
        NEUROQ_WORKER_LOST_S="5",
        NEUROQ_WEBHOOK_RETRY_DELAY_S="0.2",
        NEUROQ_RUNSYNC_DEFAULT_WAIT_MS=str(RUNSYNC_DEFAULT_WAIT_MS),
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def fleet(server: Any, api: Api, sdk_tmp: Path, workers: list[SdkWorker]) -> dict[str, SdkWorker]:
    """Start every SDK worker at once (each takes seconds to import runpod), then wait for all."""
    for endpoint, script in SCRIPTS.items():
        workers.append(start_sdk_worker(server, script, endpoint, f"w-{endpoint}", sdk_tmp))
    for endpoint in SCRIPTS:
        api.wait_workers(endpoint, 1)
    return {w.endpoint: w for w in workers}


def endpoint_via(proxy: CountingProxy, endpoint_id: str) -> runpod.Endpoint:
    """A runpod.Endpoint whose requests go through the counting proxy."""
    saved = runpod.endpoint_url_base
    runpod.endpoint_url_base = f"{proxy.url}/v2"
    try:
        return runpod.Endpoint(endpoint_id)
    finally:
        runpod.endpoint_url_base = saved


def statuses_until_final(job: runpod.Job, timeout_s: float = 30.0) -> list[str]:
    """Poll `job.status()` and return the distinct states seen, in order."""
    seen: list[str] = []

    def check() -> bool:
        state = job.status()
        if not seen or seen[-1] != state:
            seen.append(state)
        return state in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")

    wait_for(check, timeout_s, f"job {job.job_id} to finish", 0.05)
    return seen


def is_json(reply: httpx.Response | requests.Response) -> bool:
    return reply.headers.get("content-type", "").startswith("application/json")


# -- 1-3: run, status, output, runsync ------------------------------------------------------------


def test_run_then_status_then_output(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 1. The only worker is busy with `first`, so `second` is seen IN_QUEUE."""
    ep = runpod.Endpoint(ASYNC)
    first = ep.run({"op": "sleep", "seconds": 1.5})
    second = ep.run({"op": "echo", "value": {"x": 1}})
    assert second.status() == "IN_QUEUE"
    seen = statuses_until_final(first)
    assert seen[-1] == "COMPLETED" and "IN_PROGRESS" in seen
    order = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
    assert second.output(timeout=30) == {"echo": {"x": 1}}
    for job in (first, second):
        body = api.status(ASYNC, job.job_id)
        assert body["status"] == "COMPLETED"
        assert body["workerId"] == "w-c-async"
        assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)
    assert api.status(ASYNC, first.job_id)["executionTime"] >= 1400


def users_guide(base_url: str, api_key: str, endpoint_id: str) -> Callable[..., dict[str, Any]]:
    """The polling loop of shared/seed/users-async-guide.md, as users run it, with only the base
    URL changed (comments translated)."""
    RUNPOD_API_KEY = api_key
    ENDPOINT_ID = endpoint_id
    RUNPOD_URL = f"{base_url}/{ENDPOINT_ID}/run"
    STATUS_URL = f"{base_url}/{ENDPOINT_ID}/status"

    def send_and_wait(input_data: dict[str, Any], timeout: int = 600) -> dict[str, Any]:
        # 1. submit
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {RUNPOD_API_KEY}"}
        response = requests.post(
            RUNPOD_URL, headers=headers, json={"input": input_data}, timeout=30
        )
        response.raise_for_status()
        job_data = response.json()
        job_id = job_data.get("id")
        if not job_id:
            return {"error": "no job id"}
        # 2. poll the status
        status_headers = {"Authorization": f"Bearer {RUNPOD_API_KEY}"}
        status_url = f"{STATUS_URL}/{job_id}"
        start_time = time.time()
        while time.time() - start_time < timeout:
            response = requests.get(status_url, headers=status_headers, timeout=30)
            response.raise_for_status()
            result = response.json()
            status = result.get("status", "UNKNOWN")
            if status == "COMPLETED":
                return {"output": result.get("output", {})}
            elif status == "FAILED":
                return {"error": result.get("error", "job failed")}
            time.sleep(2)
        return {"error": "timeout"}

    return send_and_wait


def test_users_guide_loop(fleet: dict[str, SdkWorker], server: Any) -> None:
    send_and_wait = users_guide(server.base_url, server.api_key, ASYNC)
    assert send_and_wait({"op": "echo", "value": "guide"}, timeout=60) == {
        "output": {"echo": "guide"}
    }
    failed = send_and_wait({"op": "raise", "message": "guide-fail"}, timeout=60)
    assert json.loads(failed["error"])["error_message"] == "guide-fail"


def test_run_sync_answers_from_one_reply(
    fleet: dict[str, SdkWorker], sdk: None, proxy: CountingProxy
) -> None:
    """Case 2: a 1 s sync handler finishes inside runsync's wait, so no /status poll is made."""
    ep = endpoint_via(proxy, SYNC)
    assert ep.run_sync({"seconds": 1, "value": "a"}) == {"slept": 1, "value": "a"}
    assert len(proxy.requests(f"/v2/{SYNC}/runsync")) == 1
    assert proxy.requests(f"/v2/{SYNC}/status/") == []


def test_runsync_wait_then_sdk_polls(
    fleet: dict[str, SdkWorker], sdk: None, api: Api, proxy: CountingProxy
) -> None:
    """Case 3: `?wait=1000` answers a 5 s job unfinished; `run_sync` (no wait, server default
    lowered to 3 s) then falls back to polling /status and still returns the output."""
    started = time.monotonic()
    reply = api.http.post(f"/{SYNC}/runsync?wait=1000", json={"input": {"seconds": 5}})
    elapsed = time.monotonic() - started
    assert reply.status_code == 200 and is_json(reply)
    body = reply.json()
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert 0.9 <= elapsed < 4.0
    ep = endpoint_via(proxy, SYNC)
    assert ep.run_sync({"seconds": 4, "value": "b"}) == {"slept": 4, "value": "b"}
    polls = proxy.requests(f"/v2/{SYNC}/status/", "GET")
    assert polls, "run_sync should have polled /status after the unfinished runsync reply"
    assert api.status(SYNC, body["id"])["output"] == {"slept": 5, "value": None}


# -- 4-6: auth, errors --------------------------------------------------------------------------


def test_auth_header_forms_and_json_everywhere(
    fleet: dict[str, SdkWorker], sdk: None, server: Any
) -> None:
    """Case 4."""
    url = f"{server.base_url}/{ASYNC}/health"
    for header in (f"Bearer {server.api_key}", server.api_key, f"bearer  {server.api_key}"):
        reply = httpx.get(url, headers={"Authorization": header})
        assert reply.status_code == 200, header
        assert is_json(reply)
    bad = httpx.get(url, headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and is_json(bad) and "error" in bad.json()
    assert httpx.get(url).status_code == 401
    with pytest.raises(RuntimeError, match="401"):
        runpod.Endpoint(ASYNC, api_key="wrong").run({"op": "echo"})
    with pytest.raises(RuntimeError, match="401"):
        runpod.Endpoint(ASYNC, api_key="wrong").health()
    # Every error reply is JSON too: the asyncio SDK calls resp.json() even on errors.
    auth = {"Authorization": server.api_key}
    errors = [
        httpx.post(f"{server.base_url}/{ASYNC}/run", headers=auth, content=b"{nope"),
        httpx.post(f"{server.base_url}/{ASYNC}/run", headers=auth, json={"no": "input"}),
        httpx.get(f"{server.base_url}/{ASYNC}/status/nope", headers=auth),
        httpx.get(f"{server.base_url}/{ASYNC}/run", headers=auth),
    ]
    assert [r.status_code for r in errors] == [400, 400, 404, 405]
    for reply in errors:
        assert is_json(reply), reply.headers
        assert isinstance(reply.json()["error"], str)


def test_handler_exception_fails_the_job(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 5."""
    job = runpod.Endpoint(ASYNC).run({"op": "raise", "message": "kaput"})
    assert job.output(timeout=30) is None
    body = api.status(ASYNC, job.job_id)
    assert body["status"] == "FAILED"
    error = json.loads(body["error"])
    assert error["error_type"] == "<class 'ValueError'>"
    assert error["error_message"] == "kaput"
    assert error["worker_id"] == "w-c-async"


def test_returned_error_forms(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 6: {"error": "bad"} fails; {} completes without output; None completes with null."""
    ep = runpod.Endpoint(ASYNC)
    jobs = {op: ep.run({"op": op}) for op in ("error", "empty", "none")}
    final = {
        op: api.wait_status(ASYNC, j.job_id, {"COMPLETED", "FAILED"}) for op, j in jobs.items()
    }
    assert final["error"]["status"] == "FAILED" and final["error"]["error"] == "bad"
    assert final["empty"]["status"] == "COMPLETED" and "output" not in final["empty"]
    assert final["none"]["status"] == "COMPLETED"
    assert "output" in final["none"] and final["none"]["output"] is None


# -- 7-9: streams and progress -------------------------------------------------------------------


def test_generator_with_aggregate_stream(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 7: Job.stream() yields each chunk once, in order, and ends."""
    job = runpod.Endpoint(GEN).run({"count": 6, "gap": 0.3})
    expected = [{"i": i} for i in range(6)]
    assert list(job.stream()) == expected
    body = api.status(GEN, job.job_id)
    assert body["status"] == "COMPLETED" and body["output"] == expected


def test_async_generator_without_aggregation(
    fleet: dict[str, SdkWorker], sdk: None, api: Api
) -> None:
    """Case 8: final output is []; a /stream read after the end returns no chunk again."""
    job = runpod.Endpoint(AGEN).run({"count": 5, "gap": 0.3})
    assert list(job.stream()) == [f"piece-{i}" for i in range(5)]
    body = api.status(AGEN, job.job_id)
    assert body["status"] == "COMPLETED" and body["output"] == []
    again = api.http.get(f"/{AGEN}/stream/{job.job_id}")
    assert again.status_code == 200 and is_json(again)
    assert again.json()["status"] == "COMPLETED" and again.json()["stream"] == []


def test_progress_updates(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 9: the latest progress value shows while running; the real output wins at the end,
    and stays, although progress posts travel on their own thread and may land late."""
    job = runpod.Endpoint(ASYNC).run({"op": "progress", "hold": 1.5})
    running = api.wait_status(ASYNC, job.job_id, {"IN_PROGRESS", "COMPLETED"})

    def latest_progress() -> dict[str, Any] | None:
        body = api.status(ASYNC, job.job_id)
        return (
            body if body.get("output") == {"step": 2} or body["status"] != "IN_PROGRESS" else None
        )

    running = wait_for(latest_progress, 10, "the second progress value")
    assert running["status"] == "IN_PROGRESS" and running["output"] == {"step": 2}
    assert job.output(timeout=30) == {"done": True}
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a late progress post must not overwrite the result
        body = api.status(ASYNC, job.job_id)
        assert body["status"] == "COMPLETED" and body["output"] == {"done": True}
        time.sleep(0.1)


# -- 14, 19, 20, 23, 24: retry, webhooks, unknown ids, s3Config, sizes -----------------------------


def test_retry_failed_job(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 14 (plain HTTP: the SDK has no retry method)."""
    job = runpod.Endpoint(ASYNC).run({"op": "fail_once"})
    assert api.wait_status(ASYNC, job.job_id, {"FAILED", "COMPLETED"})["status"] == "FAILED"
    reply = api.http.post(f"/{ASYNC}/retry/{job.job_id}")
    assert reply.status_code == 200
    assert reply.json()["id"] == job.job_id and reply.json()["status"] == "IN_QUEUE"
    done = api.wait_status(ASYNC, job.job_id, {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and done["output"] == {"attempt": 2}
    assert done["retries"] == 1
    again = api.http.post(f"/{ASYNC}/retry/{job.job_id}")
    assert again.status_code == 400 and is_json(again) and "error" in again.json()
    assert api.health(ASYNC)["jobs"]["retried"] == 1


def test_webhooks(
    fleet: dict[str, SdkWorker], sdk: None, api: Api, webhooks: WebhookReceiver
) -> None:
    """Case 19: the status object (no s3Config) for COMPLETED and FAILED; a receiver failing
    twice then answering 200 gets exactly 3 attempts, one always failing also gets 3."""
    ep = runpod.Endpoint(ASYNC)
    s3 = {"accessId": "a", "accessSecret": "s3-secret", "bucketName": "b", "endpointUrl": "e"}
    ok = ep.run(
        {"input": {"op": "echo", "value": 1}, "webhook": webhooks.url("/ok"), "s3Config": s3}
    )
    failed = ep.run({"input": {"op": "raise"}, "webhook": webhooks.url("/failed")})
    flaky = ep.run({"input": {"op": "echo", "value": 2}, "webhook": webhooks.url("/flaky")})
    down = ep.run({"input": {"op": "echo", "value": 3}, "webhook": webhooks.url("/fail")})
    wait_for(lambda: webhooks.to("/ok") and webhooks.to("/failed"), 30, "webhooks")
    (delivery,) = webhooks.to("/ok")
    assert delivery.body == api.status(ASYNC, ok.job_id)
    assert delivery.body["status"] == "COMPLETED" and "s3Config" not in delivery.body
    assert "s3-secret" not in json.dumps(delivery.body)
    (delivery,) = webhooks.to("/failed")
    assert delivery.body == api.status(ASYNC, failed.job_id)
    assert delivery.body["status"] == "FAILED"
    wait_for(lambda: [d for d in webhooks.to("/flaky") if d.answered == 200], 30, "flaky 200")
    wait_for(lambda: len(webhooks.to("/fail")) >= 3, 30, "3 attempts on a failing receiver")
    # Retries are 0.2 s apart here; a fourth attempt would show up well within a second.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert [d.answered for d in webhooks.to("/flaky")] == [500, 500, 200]
        assert [d.answered for d in webhooks.to("/fail")] == [500, 500, 500]
        time.sleep(0.1)
    assert all(d.body["id"] == flaky.job_id for d in webhooks.to("/flaky"))
    assert all(d.body["id"] == down.job_id for d in webhooks.to("/fail"))


def test_unknown_ids_are_404_json(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 20. Endpoints need no registration here, so an unknown endpoint id shows as 404 on
    any job lookup, and an id that cannot be an endpoint is 404 everywhere."""
    for op in ("status", "stream", "status-sync"):
        reply = api.http.get(f"/{ASYNC}/{op}/no-such-job")
        assert reply.status_code == 404 and is_json(reply) and "error" in reply.json(), op
    for op in ("cancel", "retry"):
        reply = api.http.post(f"/{ASYNC}/{op}/no-such-job")
        assert reply.status_code == 404 and is_json(reply) and "error" in reply.json(), op
    job = runpod.Endpoint(ASYNC).run({"op": "echo"})
    assert api.http.get(f"/never-made/status/{job.job_id}").status_code == 404
    bad = api.http.get("/bad.endpoint/health")
    assert bad.status_code == 404 and is_json(bad)
    with pytest.raises(requests.HTTPError):
        runpod.Endpoint(ASYNC).rp_client.get(f"{ASYNC}/status/no-such-job")


def test_s3config_reaches_the_handler_only(
    fleet: dict[str, SdkWorker], sdk: None, api: Api
) -> None:
    """Case 23."""
    s3 = {"accessId": "id", "accessSecret": "top-secret", "bucketName": "bkt", "endpointUrl": "u"}
    job = runpod.Endpoint(ASYNC).run({"input": {"op": "s3"}, "s3Config": s3})
    assert job.output(timeout=30) == {"bucket": "bkt", "keys": sorted(s3)}
    raw = api.http.get(f"/{ASYNC}/status/{job.job_id}").text
    assert "s3Config" not in raw and "top-secret" not in raw


def test_payload_limits(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 24: /run over 10 MB is 413 JSON; a 15 MB runsync is accepted; a 5 MB output is kept."""
    too_big = b'{"input": {"pad": "' + b"x" * (10 * MB) + b'"}}'
    reply = api.http.post(f"/{ASYNC}/run", content=too_big)
    assert reply.status_code == 413 and is_json(reply) and "error" in reply.json()
    body = {"input": {"op": "echo", "value": "small", "pad": "y" * (15 * MB)}}
    reply = api.http.post(f"/{ASYNC}/runsync", json=body)
    assert reply.status_code == 200, reply.text[:200]
    done = api.wait_status(ASYNC, reply.json()["id"], {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and done["output"] == {"echo": "small"}
    job = runpod.Endpoint(ASYNC).run({"op": "big", "size": 5 * MB})
    output = job.output(timeout=60)
    assert isinstance(output, str) and len(output) == 5 * MB


# -- 25: asyncio client, and the Go SDK's POST style -----------------------------------------------


async def test_asyncio_endpoint(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 25: run/output, stream, cancel, health and purge_queue through AsyncioEndpoint."""
    async with aiohttp.ClientSession() as session:
        ep = runpod.AsyncioEndpoint(ASYNC, session)
        job = await ep.run({"op": "echo", "value": "aio"})
        assert await job.output(timeout=30) == {"echo": "aio"}
        streamed = await runpod.AsyncioEndpoint(AGEN, session).run({"count": 3, "gap": 0.2})
        assert [chunk async for chunk in streamed.stream()] == ["piece-0", "piece-1", "piece-2"]
        long = await ep.run({"op": "sleep", "seconds": 30})
        for _ in range(300):
            if await long.status() == "IN_PROGRESS":
                break
            await session.get(f"{runpod.endpoint_url_base}/{ASYNC}/health")  # yield to the loop
        reply = await long.cancel()
        assert reply["id"] == long.job_id and reply["status"] == "CANCELLED"
        health = await ep.health()
        assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
        assert {"idle", "running", "ready", "initializing", "throttled", "unhealthy"} <= set(
            health["workers"]
        )
        idle = runpod.AsyncioEndpoint(IDLE, session)
        queued = [await idle.run({"n": n}) for n in range(2)]
        assert await idle.purge_queue() == {"removed": 2, "status": "completed"}
        assert [await j.status() for j in queued] == ["CANCELLED", "CANCELLED"]


def test_status_status_sync_and_stream_answer_post(
    fleet: dict[str, SdkWorker], sdk: None, api: Api
) -> None:
    """Case 25, the Go SDK's style: POST on status, status-sync and stream; status-sync holds
    until the job ends."""
    job = runpod.Endpoint(ASYNC).run({"op": "sleep", "seconds": 1})
    started = time.monotonic()
    reply = api.http.post(f"/{ASYNC}/status-sync/{job.job_id}?wait=20000")
    assert reply.status_code == 200 and reply.json()["status"] == "COMPLETED"
    assert time.monotonic() - started < 15
    assert api.http.get(f"/{ASYNC}/status-sync/{job.job_id}?wait=1000").json()["status"] == (
        "COMPLETED"
    )
    for op in ("status", "stream"):
        reply = api.http.post(
            f"/{ASYNC}/{op}/{job.job_id}", headers={"Content-Type": "application/json"}
        )
        assert reply.status_code == 200 and is_json(reply), op
        assert reply.json()["status"] == "COMPLETED"
    assert api.http.post(f"/{ASYNC}/stream/{job.job_id}").json()["stream"] == []
