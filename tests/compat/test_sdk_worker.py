"""RunPod compatibility, worker side (spec section 4): unmodified `runpod` 1.12 SDK workers
(`runpod.serverless.start`) attached with the environment `neuroq worker-env` prints, driven by
the official client, checking cancellation, timeouts, purge, health, batching, worker recycling,
a killed worker and the request rate of an idle one.

One server and one SDK worker per endpoint serve the module; the workers all start together in
`fleet` (each takes seconds to import runpod). Workers whose requests a test must inspect go
through a CountingProxy. Case numbers in docstrings refer to spec section 4.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import runpod
from harness import start_server, wait_for
from runpod.endpoint.runner import Job
from sdk_harness import (
    Api,
    CountingProxy,
    SdkWorker,
    WebhookReceiver,
    start_sdk_worker,
)

CANCEL = "w-cancel"  # async handler; cases 10, 11, 12
SYNC = "w-sync"  # sync handler; case 12
QUEUE = "w-queue"  # cases 15, 16
BATCH = "w-batch"  # concurrency 4, behind the proxy; case 17
REFRESH = "w-refresh"  # config refresh_worker, behind the proxy; case 18
REFRESH_BY_HANDLER = "w-refresh-handler"  # case 18
KILL = "w-kill"  # case 21
IDLE = "w-idle"  # behind the proxy; case 22

#: NEUROQ_JOB_TAKE_HOLD_S of this module's server
TAKE_HOLD_S = 2.0
#: NEUROQ_WORKER_LOST_S: short, so the killed worker's job is requeued quickly
WORKER_LOST_S = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = start_server(
        tmp_path_factory.mktemp("compat-worker"),
        NEUROQ_JOB_TAKE_HOLD_S=str(TAKE_HOLD_S),
        NEUROQ_WORKER_LOST_S=str(WORKER_LOST_S),
        NEUROQ_WEBHOOK_RETRY_DELAY_S="0.2",
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def early_cancelled(sdk: None, api: Api, webhooks: WebhookReceiver) -> str:
    """Case 10, set-up: queue a job and cancel it before any worker serves its endpoint."""
    job = runpod.Endpoint(CANCEL).run(
        {"input": {"op": "echo", "value": "never"}, "webhook": webhooks.url("/cancelled")}
    )
    reply = job.cancel()
    assert reply["id"] == job.job_id and reply["status"] == "CANCELLED"
    return str(job.job_id)


@pytest.fixture(scope="module")
def fleet(
    server: Any,
    api: Api,
    proxy: CountingProxy,
    sdk_tmp: Path,
    workers: list[SdkWorker],
    early_cancelled: str,
) -> dict[str, SdkWorker]:
    plan: list[tuple[str, str, str | None, dict[str, str]]] = [
        (CANCEL, "async_worker.py", None, {}),
        (SYNC, "sync_worker.py", None, {}),
        (QUEUE, "async_worker.py", None, {}),
        (BATCH, "async_worker.py", proxy.url, {"COMPAT_CONCURRENCY": "4"}),
        (REFRESH, "refresh_worker.py", proxy.url, {}),
        (REFRESH_BY_HANDLER, "async_worker.py", None, {}),
        (KILL, "async_worker.py", None, {}),
        (IDLE, "async_worker.py", proxy.url, {}),
    ]
    for endpoint, script, url, env in plan:
        workers.append(
            start_sdk_worker(server, script, endpoint, endpoint, sdk_tmp, url=url, **env)
        )
    for endpoint, *_ in plan:
        api.wait_workers(endpoint, 1)
    return {w.endpoint: w for w in workers}


def health_workers(api: Api, endpoint: str) -> int:
    workers = api.health(endpoint)["workers"]
    return int(workers["idle"] + workers["running"])


# -- 10-13: cancel, executionTimeout, ttl ---------------------------------------------------------


def test_cancel_queued_job_never_reaches_a_worker(
    fleet: dict[str, SdkWorker],
    sdk: None,
    api: Api,
    webhooks: WebhookReceiver,
    early_cancelled: str,
) -> None:
    """Case 10: cancelled while queued with no worker; the worker started afterwards runs other
    jobs but never this one; the webhook gets the CANCELLED status object."""
    assert api.status(CANCEL, early_cancelled)["status"] == "CANCELLED"
    (delivery,) = wait_for(lambda: webhooks.to("/cancelled"), 30, "the CANCELLED webhook")
    assert delivery.body == api.status(CANCEL, early_cancelled)
    assert delivery.body["status"] == "CANCELLED"
    later = runpod.Endpoint(CANCEL).run({"op": "echo", "value": "later"})
    assert later.output(timeout=30) == {"echo": "later"}
    seen = {e["id"] for e in fleet[CANCEL].events()}
    assert later.job_id in seen and early_cancelled not in seen
    assert early_cancelled not in fleet[CANCEL].log()


def test_cancel_running_async_handler(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 11: job-stop reaches the SDK, the handler gets CancelledError, the job stays
    CANCELLED and the same worker takes the next job."""
    worker = fleet[CANCEL]
    job = runpod.Endpoint(CANCEL).run({"op": "sleep", "seconds": 30})
    wait_for(
        lambda: any(e["id"] == job.job_id and e["event"] == "start" for e in worker.events()),
        30,
        "the handler to start",
    )
    cancelled_at = time.monotonic()
    reply = job.cancel()
    assert reply["status"] == "CANCELLED"
    wait_for(
        lambda: any(e["id"] == job.job_id and e["event"] == "cancelled" for e in worker.events()),
        10,
        "the handler to see CancelledError",
        0.05,
    )
    assert time.monotonic() - cancelled_at < 4.0  # spec: within about 2 s; slack for a busy host
    nxt = runpod.Endpoint(CANCEL).run({"op": "echo", "value": "next"})
    assert nxt.output(timeout=30) == {"echo": "next"}
    assert api.status(CANCEL, nxt.job_id)["workerId"] == worker.worker_id
    body = api.status(CANCEL, job.job_id)
    assert body["status"] == "CANCELLED" and "output" not in body


def test_execution_timeout(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 12: executionTimeout=5000 ends a 30 s async handler as TIMED_OUT after about 5 s and
    stops it; a sync handler cannot be stopped, and its late result is ignored."""
    policy = {"executionTimeout": 5000}
    submitted = time.monotonic()
    slow_async = runpod.Endpoint(CANCEL).run(
        {"input": {"op": "sleep", "seconds": 30}, "policy": policy}
    )
    slow_sync = runpod.Endpoint(SYNC).run(
        {"input": {"seconds": 8, "value": "late"}, "policy": policy}
    )
    for endpoint, job in ((CANCEL, slow_async), (SYNC, slow_sync)):
        body = api.wait_status(endpoint, job.job_id, {"TIMED_OUT", "COMPLETED", "FAILED"}, 20)
        assert body["status"] == "TIMED_OUT", body
    assert 4.5 <= time.monotonic() - submitted < 10.0
    wait_for(
        lambda: any(
            e["id"] == slow_async.job_id and e["event"] == "cancelled"
            for e in fleet[CANCEL].events()
        ),
        10,
        "the stop signal to cancel the async handler",
    )
    # The sync handler runs to its end and posts; once the worker has taken and finished the
    # next job, that post has been made (or aborted by the stop signal) and must have changed
    # nothing.
    after = runpod.Endpoint(SYNC).run({"seconds": 0, "value": "after"})
    assert after.output(timeout=30) == {"slept": 0, "value": "after"}
    assert any(e["id"] == slow_sync.job_id and e["event"] == "end" for e in fleet[SYNC].events())
    body = api.status(SYNC, slow_sync.job_id)
    assert body["status"] == "TIMED_OUT" and "output" not in body


@pytest.mark.slow
def test_ttl_expires_in_queue(tmp_path: Path) -> None:
    """Case 13 (ttl's minimum is 10 s, so this takes about 12 s): with no worker the job is
    TIMED_OUT after its ttl; once retention (1 s on this server) passes, /status is 404 and the
    SDK raises HTTPError. Its own server, because retention is server-wide."""
    srv = start_server(tmp_path / "ttl", NEUROQ_RETENTION_RUN_S="1")
    saved = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key, runpod.endpoint_url_base = srv.api_key, srv.base_url
    try:
        ep = runpod.Endpoint("ttl")
        submitted = time.monotonic()
        job = ep.run({"input": {"x": 1}, "policy": {"ttl": 10000}})
        assert statuses_seen(job) == "TIMED_OUT"
        assert 9.5 <= time.monotonic() - submitted < 14.0

        def gone() -> bool:
            try:
                Job("ttl", job.job_id, ep.rp_client).status()  # a fresh Job: no cached state
            except requests.HTTPError as exc:
                assert exc.response is not None and exc.response.status_code == 404
                return True
            return False

        wait_for(gone, 15, "the timed-out job to expire")
    finally:
        runpod.api_key, runpod.endpoint_url_base = saved
        srv.stop()


def statuses_seen(job: Job, timeout_s: float = 20.0) -> str:
    """Poll `job.status()` until it is final; return the final state."""
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
    result: str = wait_for(
        lambda: (s := job.status()) in final and s, timeout_s, f"job {job.job_id} to end", 0.1
    )
    return result


# -- 15, 16: health and purge ---------------------------------------------------------------------


def test_health_counts_follow_a_job(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 16: every key present as an integer; the worker goes idle -> running -> idle."""
    health = api.health(QUEUE)
    assert set(health["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    expected_workers = {"idle", "initializing", "ready", "running", "throttled", "unhealthy"}
    assert set(health["workers"]) == expected_workers
    for group in health.values():
        assert all(type(v) is int for v in group.values()), health
    assert health["workers"]["idle"] == 1 and health["workers"]["running"] == 0
    job = runpod.Endpoint(QUEUE).run({"op": "sleep", "seconds": 2})
    running = wait_for(
        lambda: (h := api.health(QUEUE))["workers"]["running"] == 1 and h,
        10,
        "the worker to count as running",
    )
    assert running["workers"]["idle"] == 0 and running["jobs"]["inProgress"] == 1
    assert job.output(timeout=30) == {"slept": 2}
    idle = wait_for(
        lambda: (h := api.health(QUEUE))["workers"]["idle"] == 1 and h,
        10,
        "the worker to count as idle again",
    )
    assert idle["workers"]["running"] == 0 and idle["jobs"]["inProgress"] == 0
    assert idle["jobs"]["completed"] >= 1


def test_purge_queue_keeps_the_running_job(
    fleet: dict[str, SdkWorker], sdk: None, api: Api
) -> None:
    """Case 15."""
    ep = runpod.Endpoint(QUEUE)
    running = ep.run({"op": "sleep", "seconds": 2})
    api.wait_status(QUEUE, running.job_id, {"IN_PROGRESS"})
    queued = [ep.run({"op": "echo", "value": n}) for n in range(3)]
    assert api.health(QUEUE)["jobs"]["inQueue"] == 3
    assert ep.purge_queue() == {"removed": 3, "status": "completed"}
    assert [api.status(QUEUE, j.job_id)["status"] for j in queued] == ["CANCELLED"] * 3
    assert running.output(timeout=30) == {"slept": 2}
    assert not {j.job_id for j in queued} & {e["id"] for e in fleet[QUEUE].events()}


# -- 17, 18: batching and recycling ---------------------------------------------------------------


def test_concurrency_modifier_takes_batches(
    fleet: dict[str, SdkWorker], sdk: None, api: Api, proxy: CountingProxy
) -> None:
    """Case 17: with concurrency 4 the SDK uses job-take-batch; 4 jobs overlap; no reply holds
    more jobs than the batch_size asked for."""
    ep = runpod.Endpoint(BATCH)
    jobs = [ep.run({"op": "sleep", "seconds": 2}) for _ in range(4)]
    for job in jobs:
        assert job.output(timeout=30) == {"slept": 2}
    ids = {j.job_id for j in jobs}
    events = [e for e in fleet[BATCH].events() if e["id"] in ids]
    starts = [e["t"] for e in events if e["event"] == "start"]
    ends = [e["t"] for e in events if e["event"] == "end"]
    assert len(starts) == len(ends) == 4
    assert max(starts) < min(ends), "the four jobs did not run at the same time"
    batches = proxy.requests(f"/v2/{BATCH}/job-take-batch/", "GET")
    assert batches, "the SDK never used job-take-batch"
    delivered: list[str] = []
    for seen in proxy.requests(f"/v2/{BATCH}/job-take"):
        query = parse_qs(urlsplit(seen.path).query)
        if seen.status != 200:
            assert seen.status == 204
            continue
        body = json.loads(seen.body)
        if "/job-take-batch/" in seen.path:
            assert isinstance(body, list) and len(body) <= int(query["batch_size"][0])
            delivered += [item["id"] for item in body]
        else:
            assert isinstance(body, dict)
            delivered.append(body["id"])
    assert sorted(delivered) == sorted(ids)  # each job delivered exactly once


def test_refresh_worker_config_stops_the_worker(
    fleet: dict[str, SdkWorker], sdk: None, api: Api, proxy: CountingProxy
) -> None:
    """Case 18: `refresh_worker: True` puts stopPod on the result, the SDK process exits by
    itself within seconds, and health stops counting it."""
    worker = fleet[REFRESH]
    job = runpod.Endpoint(REFRESH).run({"value": 1})
    assert job.output(timeout=30) == {"once": 1}
    (done,) = proxy.requests(f"/v2/{REFRESH}/job-done/", "POST")
    assert json.loads(done.request_body)["stopPod"] is True
    worker.proc.wait(timeout=20)
    wait_for(lambda: health_workers(api, REFRESH) == 0, 20, "health to drop the worker")


def test_refresh_worker_from_handler(fleet: dict[str, SdkWorker], sdk: None, api: Api) -> None:
    """Case 18: a handler returning refresh_worker gets that key removed from its output."""
    job = runpod.Endpoint(REFRESH_BY_HANDLER).run({"op": "refresh"})
    assert job.output(timeout=30) == {"a": 1}
    assert api.status(REFRESH_BY_HANDLER, job.job_id)["status"] == "COMPLETED"
    # The SDK keeps running; recycling it is the platform's business (spec 2.11).
    assert fleet[REFRESH_BY_HANDLER].proc.poll() is None


# -- 21, 22: a killed worker, an idle worker -------------------------------------------------------


@pytest.mark.slow
def test_sigkill_mid_job_requeues_once(
    fleet: dict[str, SdkWorker],
    sdk: None,
    api: Api,
    sdk_tmp: Path,
    workers: list[SdkWorker],
    server: Any,
) -> None:
    """Case 21: the first worker dies (SIGKILL, heartbeat process included) holding the job; after
    worker_lost_s the job is requeued with retries 1 and a second worker completes it."""
    first = fleet[KILL]
    job = runpod.Endpoint(KILL).run({"op": "sleep", "seconds": 3})
    body = api.wait_status(KILL, job.job_id, {"IN_PROGRESS"})
    assert body["workerId"] == first.worker_id
    first.kill()
    workers.append(start_sdk_worker(server, "async_worker.py", KILL, "w-kill-2", sdk_tmp))
    done = api.wait_status(KILL, job.job_id, {"COMPLETED", "FAILED"}, 60)
    assert done["status"] == "COMPLETED" and done["output"] == {"slept": 3}
    assert done["retries"] == 1 and done["workerId"] == "w-kill-2"
    wait_for(lambda: health_workers(api, KILL) == 1, 20, "health to count only the new worker")


@pytest.mark.slow
def test_idle_worker_request_rate_is_bounded(
    fleet: dict[str, SdkWorker], proxy: CountingProxy
) -> None:
    """Case 22. The issue states it for 60 s of idling: at most about 60 / hold job-take requests,
    with hold the server's job-take hold time. The SDK asks again the moment a 204 arrives, so
    the count is duration / hold however long we watch; here the hold is 2 s and the window
    10 s, so the bound is 10 / 2 = 5 plus 2 for the requests straddling the window's edges (a
    server answering idle takes at once would show hundreds). Job-stop is held 30 s, longer
    than the window, so at most one new stop poll starts and one is open at any time."""
    window_s = 10.0
    take = f"/v2/{IDLE}/job-take"
    stop = f"/v2/{IDLE}/job-stop"
    takes_before = len(proxy.requests(take))
    stops_before = len(proxy.requests(stop))
    time.sleep(window_s)  # the measurement window itself, not a wait for a condition
    takes = len(proxy.requests(take)) - takes_before
    stops = len(proxy.requests(stop)) - stops_before
    assert window_s / TAKE_HOLD_S - 2 <= takes <= window_s / TAKE_HOLD_S + 2, takes
    assert stops <= 1, stops
    # After each held stop poll ends the SDK pauses 1 s before the next; allow for that gap.
    wait_for(lambda: proxy.in_flight(stop) == 1, 3, "the idle worker's open job-stop poll")
    assert proxy.in_flight(take) <= 1
