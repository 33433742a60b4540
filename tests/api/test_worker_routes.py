"""The worker protocol (spec section 2) against a real server process, driven the way the runpod
1.12 SDK drives it: raw HTTP, bare worker key, JSON bodies labelled as form data, query strings
appended with `&`. Each test uses its own endpoint id on one shared server, so they stay apart."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import SDK_POST_HEADERS, ServerProcess, start_server, wait_for_async

TAKE_HOLD_S = 3.0
STOP_HOLD_S = 1.5
AUTH_DELAY_S = 0.4
MAX_RESULT_BYTES = 64 * 1024


def _serve(factory: pytest.TempPathFactory, **extra: str) -> Iterator[ServerProcess]:
    """A server with this module's short holds and small limits, plus `extra` settings."""
    proc = start_server(
        factory.mktemp("worker-routes"),
        NEUROQ_JOB_TAKE_HOLD_S=str(TAKE_HOLD_S),
        NEUROQ_JOB_STOP_HOLD_S=str(STOP_HOLD_S),
        NEUROQ_WORKER_AUTH_FAILURE_DELAY_S=str(AUTH_DELAY_S),
        NEUROQ_MAX_RESULT_BODY_BYTES=str(MAX_RESULT_BYTES),
        **extra,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _serve(tmp_path_factory)


class Api:
    """A client and a worker speaking to one server, each with its own key."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = httpx.AsyncClient(
            base_url=server.base_url, headers=server.client_headers, timeout=30
        )
        self.worker = httpx.AsyncClient(
            base_url=server.base_url, headers=server.worker_headers, timeout=30
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.worker.aclose()

    async def submit(self, ep: str, job_input: Any = None, **extra: Any) -> str:
        body = {"input": {"n": 1} if job_input is None else job_input, **extra}
        reply = await self.client.post(f"/{ep}/run", json=body)
        assert reply.status_code == 200, reply.text
        return str(reply.json()["id"])

    async def status(self, ep: str, job_id: str) -> dict[str, Any]:
        reply = await self.client.get(f"/{ep}/status/{job_id}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    async def wait_status(
        self,
        ep: str,
        job_id: str,
        until: Callable[[dict[str, Any]], bool],
        timeout_s: float = 15.0,
    ) -> dict[str, Any]:
        what = f"job {job_id}'s status to meet the condition"
        return await wait_for_async(lambda: self.status(ep, job_id), timeout_s, what, until=until)

    async def wait_health(
        self, ep: str, until: Callable[[dict[str, Any]], bool], timeout_s: float = 10.0
    ) -> dict[str, Any]:
        async def health() -> dict[str, Any]:
            body: dict[str, Any] = (await self.client.get(f"/{ep}/health")).json()
            return body

        return await wait_for_async(health, timeout_s, f"{ep}'s health", 0.05, until=until)

    async def take(self, ep: str, worker: str, query: str = "?job_in_progress=0") -> httpx.Response:
        return await self.worker.get(f"/{ep}/job-take/{worker}{query}")

    async def running(self, ep: str, worker: str, job_input: Any = None, **extra: Any) -> str:
        """Submit a job and take it as `worker`; its id."""
        job_id = await self.submit(ep, job_input, **extra)
        reply = await self.take(ep, worker)
        assert reply.status_code == 200, reply.text
        assert reply.json()["id"] == job_id
        return job_id

    async def done(
        self, ep: str, worker: str, job_id: str, body: Any, is_stream: bool = False
    ) -> httpx.Response:
        flag = "true" if is_stream else "false"
        return await self.worker.post(
            f"/{ep}/job-done/{worker}/{job_id}?gpu=local&isStream={flag}",
            content=json.dumps(body, ensure_ascii=False).encode(),
            headers=SDK_POST_HEADERS,
        )

    async def stream_chunk(self, ep: str, worker: str, job_id: str, chunk: Any) -> httpx.Response:
        return await self.worker.post(
            f"/{ep}/job-stream/{worker}/{job_id}?gpu=local&isStream=false",
            content=json.dumps({"output": chunk}).encode(),
            headers=SDK_POST_HEADERS,
        )

    async def stop_poll(self, ep: str, worker: str) -> httpx.Response:
        return await self.worker.get(f"/{ep}/job-stop/{worker}?gpu=local")


@pytest.fixture
async def api(srv: ServerProcess) -> AsyncIterator[Api]:
    api = Api(srv)
    yield api
    await api.aclose()


def workers_seen(health: dict[str, Any]) -> int:
    return sum(v for k, v in health["workers"].items() if k != "ready")


# -- job-take ------------------------------------------------------------------------------------


async def test_take_long_poll_wakes_when_a_job_is_submitted(api: Api, ep: str) -> None:
    pending = asyncio.create_task(api.take(ep, "w1"))
    # The take registers the worker before it starts waiting; health shows it.
    await api.wait_health(ep, lambda h: workers_seen(h) >= 1)
    assert not pending.done()
    started = time.monotonic()
    job_id = await api.submit(ep, {"prompt": "héllo"}, webhook="http://example.invalid/h")
    reply = await pending
    waited = time.monotonic() - started
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    job = reply.json()
    assert job["id"] == job_id
    assert job["input"] == {"prompt": "héllo"}
    assert job["webhook"] == "http://example.invalid/h"
    assert waited < TAKE_HOLD_S / 2, f"take answered {waited:.2f} s after the submit"


async def test_idle_take_is_held_then_answered_204(api: Api, ep: str) -> None:
    started = time.monotonic()
    reply = await api.take(ep, "w1")
    held = time.monotonic() - started
    assert reply.status_code == 204
    assert TAKE_HOLD_S - 0.3 <= held < TAKE_HOLD_S + 2


async def test_take_wait_shortens_the_hold_never_lengthens_it(api: Api, ep: str) -> None:
    """`wait=MS` (what a --burst worker sends) holds at most that long; the server's hold stays
    the ceiling; a bad value is a 400 naming it."""
    started = time.monotonic()
    reply = await api.worker.get(f"/{ep}/job-take-batch/w1?batch_size=4&wait=200")
    assert reply.status_code == 204
    assert time.monotonic() - started < TAKE_HOLD_S / 2
    started = time.monotonic()
    reply = await api.worker.get(f"/{ep}/job-take/w1?wait=999999")
    assert reply.status_code == 204
    assert TAKE_HOLD_S - 0.3 <= time.monotonic() - started < TAKE_HOLD_S + 2
    job_id = await api.submit(ep)
    reply = await api.worker.get(f"/{ep}/job-take/w1?wait=0")
    assert reply.status_code == 200 and reply.json()["id"] == job_id
    for bad in ("-1", "soon", "1.5"):
        reply = await api.worker.get(f"/{ep}/job-take/w1?wait={bad}")
        assert reply.status_code == 400
        assert "wait must be a non-negative integer" in reply.json()["error"]


async def test_batch_never_exceeds_batch_size(api: Api, ep: str) -> None:
    ids = [await api.submit(ep, {"i": i}) for i in range(5)]
    first = await api.worker.get(
        f"/{ep}/job-take-batch/wb?gpu=local&batch_size=3&job_in_progress=0"
    )
    assert first.status_code == 200
    assert [j["id"] for j in first.json()] == ids[:3]
    second = await api.worker.get(f"/{ep}/job-take-batch/wb?batch_size=3&job_in_progress=1")
    assert [j["id"] for j in second.json()] == ids[3:]
    # job-take (not batch) answers one object even if batch_size is given.
    more = await api.submit(ep)
    await api.submit(ep)
    single = await api.worker.get(f"/{ep}/job-take/wb?batch_size=5&job_in_progress=1")
    assert single.json()["id"] == more


async def test_each_job_goes_to_one_worker_under_concurrent_takers(api: Api, ep: str) -> None:
    takers = [asyncio.create_task(api.take(ep, f"w{i}")) for i in range(12)]
    await api.wait_health(ep, lambda h: workers_seen(h) >= 12)
    ids = {await api.submit(ep, {"i": i}) for i in range(10)}
    replies = await asyncio.gather(*takers)
    got = [(f"w{i}", r.json()["id"]) for i, r in enumerate(replies) if r.status_code == 200]
    assert sorted(r.status_code for r in replies) == [200] * 10 + [204] * 2
    assert sorted(job_id for _, job_id in got) == sorted(ids)
    for worker, job_id in got:
        assert (await api.status(ep, job_id))["workerId"] == worker


async def test_bad_worker_key_is_401_delayed_on_take(api: Api, ep: str) -> None:
    bad = {"Authorization": "wrong"}
    started = time.monotonic()
    reply = await api.worker.get(f"/{ep}/job-take/w1?job_in_progress=0", headers=bad)
    assert reply.status_code == 401
    assert reply.headers["content-type"] == "application/json"
    assert "worker key" in reply.json()["error"]
    assert time.monotonic() - started >= AUTH_DELAY_S - 0.05
    # The client key is not a worker key.
    client_key = {"Authorization": api.server.api_key}
    reply = await api.worker.post(f"/{ep}/job-done/w1/x", headers=client_key, content=b"{}")
    assert reply.status_code == 401


async def test_bearer_worker_key_and_bad_params(api: Api, ep: str) -> None:
    bearer = {"Authorization": f"Bearer {api.server.worker_key}"}
    reply = await api.worker.get(f"/{ep}/ping/w1", headers=bearer)
    assert reply.status_code == 200
    assert reply.json() == {}
    reply = await api.worker.get(f"/{ep}/job-take/w1?job_in_progress=maybe")
    assert reply.status_code == 400
    assert "job_in_progress" in reply.json()["error"]
    reply = await api.worker.get(f"/{ep}/job-take-batch/w1?batch_size=0")
    assert reply.status_code == 400
    assert "batch_size" in reply.json()["error"]


async def test_glued_query_in_worker_segment(api: Api, ep: str) -> None:
    job_id = await api.submit(ep)
    # A template without `?`: the SDK appends `&job_in_progress=0` to the path itself.
    reply = await api.worker.get(
        f"/{ep}/job-take/w-glued&job_in_progress=0", headers={"X-Request-ID": "stale-id"}
    )
    assert reply.status_code == 200
    assert reply.json()["id"] == job_id
    done = await api.worker.post(
        f"/{ep}/job-done/w-glued/{job_id}&isStream=false",
        content=b'{"output": 7}',
        headers=SDK_POST_HEADERS,
    )
    assert done.status_code == 200
    status = await api.status(ep, job_id)
    assert status["workerId"] == "w-glued"
    assert status["output"] == 7
    # Empty pairs and unknown parameters are tolerated.
    second = await api.submit(ep)
    reply = await api.worker.get(f"/{ep}/job-take/w-glued?&gpu=local&&job_in_progress=0")
    assert reply.json()["id"] == second


@pytest.mark.parametrize("endpoint", ["%2e%2e", "caf%C3%A9", "a%20b", "x" * 129])
async def test_worker_routes_refuse_the_endpoint_ids_client_routes_refuse(
    api: Api, endpoint: str
) -> None:
    """No job can live on such an endpoint, so the worker routes answer as the client routes
    do: 404 naming the rule, for every route."""
    assert (await api.client.get(f"/{endpoint}/health")).status_code == 404
    for reply in (
        await api.take(endpoint, "w1"),
        await api.worker.get(f"/{endpoint}/ping/w1"),
        await api.worker.get(f"/{endpoint}/job-stop/w1"),
        await api.done(endpoint, "w1", "job-1", {"output": 1}),
        await api.worker.post(f"/{endpoint}/job-stream/w1/job-1", content=b'{"output": 1}'),
        await api.worker.post(f"/{endpoint}/job-done-batch/w1", content=b"[]"),
    ):
        assert reply.status_code == 404, reply.text
        assert "endpoint ids are 1-128 characters" in reply.json()["error"]


async def test_literal_pod_id_placeholder_is_refused_saying_how_to_fix_it(
    api: Api, ep: str
) -> None:
    """A take template that keeps `$RUNPOD_POD_ID` names no worker: every route refuses it with
    a 400 that says what to write instead; job-take and job-stop (which the SDK re-asks at
    once) hold the refusal back as they do a bad key, and the job stays queued."""
    job_id = await api.submit(ep)
    for url in (
        f"/{ep}/job-take/$RUNPOD_POD_ID?gpu=local&job_in_progress=0",
        f"/{ep}/job-take-batch/$RUNPOD_POD_ID?gpu=local&batch_size=2",
        f"/{ep}/job-stop/$RUNPOD_POD_ID?gpu=local",
    ):
        started = time.monotonic()
        reply = await api.worker.get(url)
        assert time.monotonic() - started >= AUTH_DELAY_S - 0.05, url
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert "literal `$RUNPOD_POD_ID`" in error
        assert "RUNPOD_WEBHOOK_GET_JOB" in error and "/job-take/$ID" in error
        assert "NEUROQ_ANONYMOUS_WORKERS=true" in error
    for reply in (
        await api.done(ep, "$RUNPOD_POD_ID", job_id, {"output": "x"}),
        await api.worker.get(f"/{ep}/ping/$RUNPOD_POD_ID?job_id={job_id}"),
    ):
        assert reply.status_code == 400 and "RUNPOD_POD_ID" in reply.json()["error"]
    assert (await api.status(ep, job_id))["status"] == "IN_QUEUE"
    assert (await api.take(ep, "real-pod")).json()["id"] == job_id


@pytest.fixture(scope="module")
def anon_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that accepts `$RUNPOD_POD_ID` takes under a per-host alias."""
    yield from _serve(tmp_path_factory, NEUROQ_ANONYMOUS_WORKERS="true")


async def test_literal_pod_id_placeholder_is_an_anonymous_worker_when_allowed(
    anon_srv: ServerProcess, ep: str
) -> None:
    api = Api(anon_srv)
    try:
        job_id = await api.submit(ep)
        reply = await api.take(ep, "$RUNPOD_POD_ID", "?gpu=local&job_in_progress=0")
        assert reply.status_code == 200
        assert reply.json()["id"] == job_id
        assert (await api.status(ep, job_id))["workerId"] == "anon-127-0-0-1"
        # The SDK substitutes its real id in job-done: the result is still accepted.
        assert (await api.done(ep, "real-pod", job_id, {"output": "ok"})).json() == {}
        status = await api.status(ep, job_id)
        assert status["status"] == "COMPLETED"
        assert status["output"] == "ok"
    finally:
        await api.aclose()


# -- job-done ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"output": {"text": "hé"}}, {"status": "COMPLETED", "output": {"text": "hé"}}),
        ({"output": None}, {"status": "COMPLETED", "output": None}),
        ({"output": [1, False]}, {"status": "COMPLETED", "output": [1, False]}),
        ({}, {"status": "COMPLETED"}),
        ({"error": "bad"}, {"status": "FAILED", "error": "bad"}),
        (
            {"output": {"a": 1}, "error": "E"},
            {"status": "FAILED", "output": {"a": 1}, "error": "E"},
        ),
    ],
    ids=["output", "null", "list", "empty", "error", "error+output"],
)
async def test_done_body_forms(
    api: Api, ep: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    job_id = await api.running(ep, "wd")
    reply = await api.done(ep, "wd", job_id, body)
    assert reply.status_code == 200
    assert reply.json() == {}
    status = await api.status(ep, job_id)
    assert {k: status[k] for k in expected if k in status} == expected
    assert set(status) - {"delayTime", "executionTime", "workerId", "id"} == set(expected)
    assert status["workerId"] == "wd"
    assert isinstance(status["delayTime"], int)
    assert isinstance(status["executionTime"], int)


async def test_progress_then_result_then_late_progress(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wp")
    assert (
        await api.done(ep, "wp", job_id, {"status": "IN_PROGRESS", "output": 50})
    ).status_code == 200
    status = await api.status(ep, job_id)
    assert (status["status"], status["output"]) == ("IN_PROGRESS", 50)
    assert "executionTime" not in status
    await api.done(ep, "wp", job_id, {"output": "final"})
    # A progress post from the SDK's side thread lands after the result; so does a duplicate.
    assert (
        await api.done(ep, "wp", job_id, {"status": "IN_PROGRESS", "output": 99})
    ).status_code == 200
    assert (await api.done(ep, "wp", job_id, {"output": "second"})).status_code == 200
    status = await api.status(ep, job_id)
    assert (status["status"], status["output"]) == ("COMPLETED", "final")


async def test_stream_chunks_then_aggregate(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "ws")
    for chunk in ["a", {"b": 2}, None]:
        assert (await api.stream_chunk(ep, "ws", job_id, chunk)).status_code == 200
    reply = await api.client.get(f"/{ep}/stream/{job_id}")
    assert reply.json()["stream"] == [{"output": "a"}, {"output": {"b": 2}}, {"output": None}]
    await api.done(ep, "ws", job_id, {"output": ["a", {"b": 2}, None]}, is_stream=True)
    # Chunks after the end are discarded with 200.
    assert (await api.stream_chunk(ep, "ws", job_id, "late")).status_code == 200
    reply = await api.client.get(f"/{ep}/stream/{job_id}")
    assert reply.json() == {"status": "COMPLETED", "stream": []} | {
        k: v for k, v in reply.json().items() if k not in ("status", "stream")
    }
    assert (await api.status(ep, job_id))["output"] == ["a", {"b": 2}, None]


async def test_unknown_job_is_404(api: Api, ep: str) -> None:
    reply = await api.done(ep, "w1", "no-such-job", {"output": 1})
    assert reply.status_code == 404
    assert "no-such-job" in reply.json()["error"]
    reply = await api.stream_chunk(ep, "w1", "no-such-job", 1)
    assert reply.status_code == 404


async def test_unreadable_result_fails_the_job(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wx")
    reply = await api.worker.post(f"/{ep}/job-done/wx/{job_id}", content=b"{not json")
    assert reply.status_code == 400
    assert "not valid JSON" in reply.json()["error"]
    status = await api.status(ep, job_id)
    assert status["status"] == "FAILED"
    assert "unreadable job-done body" in status["error"]


async def test_oversize_result_is_413_and_fails_the_job(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wo")
    reply = await api.done(ep, "wo", job_id, {"output": "x" * (MAX_RESULT_BYTES + 10)})
    assert reply.status_code == 413
    assert "result too large" in reply.json()["error"]
    status = await api.status(ep, job_id)
    assert status["status"] == "FAILED"
    assert "result too large" in status["error"]


async def test_done_batch_stores_each_result_like_job_done(api: Api, ep: str) -> None:
    ok = await api.running(ep, "wb", {"n": 1})
    failed = await api.running(ep, "wb", {"n": 2})
    ended = await api.running(ep, "wb", {"n": 3})
    await api.done(ep, "wb", ended, {"output": "first"})
    items = [
        {"id": ok, "result": {"output": {"n": 1}}},
        {"id": failed, "result": {"error": "bad input"}},
        {"id": ended, "result": {"output": "late"}},
        {"id": "no-such-job", "result": {"output": 0}},
    ]
    reply = await api.worker.post(f"/{ep}/job-done-batch/wb?gpu=local", json=items)
    assert reply.status_code == 200, reply.text
    outcomes = {
        "finished": [ok, failed],
        "discarded": [ended],
        "ignored": [],
        "unknown": ["no-such-job"],
    }
    assert reply.json() == outcomes
    assert (await api.status(ep, ok))["output"] == {"n": 1}
    assert (await api.status(ep, failed))["error"] == "bad input"
    assert (await api.status(ep, ended))["output"] == "first"


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON array of 1 to"),
        (b'{"id": "x"}', "JSON array of 1 to"),
        (b'[{"id": 5, "result": {}}]', "item 0: `id`"),
        (b'[{"id": "x", "result": [1]}]', "item 0: `result`"),
        (b'[{"id": "x", "result": {"status": "IN_PROGRESS", "output": 1}}]', "progress update"),
    ],
)
async def test_done_batch_refuses_a_malformed_batch_whole(
    api: Api, ep: str, body: bytes, named: str
) -> None:
    job_id = await api.running(ep, "wm")
    reply = await api.worker.post(f"/{ep}/job-done-batch/wm", content=body)
    assert reply.status_code == 400
    assert named in reply.json()["error"]
    assert (await api.status(ep, job_id))["status"] == "IN_PROGRESS"  # nothing stored


async def test_done_batch_needs_the_worker_key(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wk")
    items = [{"id": job_id, "result": {"output": 1}}]
    reply = await api.client.post(f"/{ep}/job-done-batch/wk", json=items)  # a client key
    assert reply.status_code == 401
    assert (await api.status(ep, job_id))["status"] == "IN_PROGRESS"


# -- job-stop, ping, worker states --------------------------------------------------------------


async def test_cancel_running_job_is_offered_on_job_stop_until_released(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wc")
    idle = time.monotonic()
    assert (await api.stop_poll(ep, "wc")).status_code == 204
    assert time.monotonic() - idle >= STOP_HOLD_S - 0.3
    pending = asyncio.create_task(api.stop_poll(ep, "wc"))
    await asyncio.sleep(0.2)  # let the poll start waiting; it must be woken, not re-asked
    started = time.monotonic()
    cancel = await api.client.post(f"/{ep}/cancel/{job_id}")
    assert cancel.json()["status"] == "CANCELLED"
    reply = await pending
    assert time.monotonic() - started < STOP_HOLD_S / 2
    assert reply.json() == {"jobsToStop": [job_id]}
    # Still offered while the worker's pings list the job, but not in a hot loop: the SDK asks
    # again at once after a reply with ids.
    await api.worker.get(f"/{ep}/ping/wc", params={"job_id": job_id, "runpod_version": "1.12.0"})
    started = time.monotonic()
    assert (await api.stop_poll(ep, "wc")).json() == {"jobsToStop": [job_id]}
    assert 0.8 <= time.monotonic() - started < STOP_HOLD_S + 0.5
    # ...and no longer once a ping leaves it out.
    await api.worker.get(f"/{ep}/ping/wc", params={"runpod_version": "1.12.0"})
    assert (await api.stop_poll(ep, "wc")).status_code == 204
    # A result posted after the cancel is discarded.
    assert (await api.done(ep, "wc", job_id, {"output": 1})).status_code == 200
    assert (await api.status(ep, job_id))["status"] == "CANCELLED"


async def test_take_with_nothing_in_progress_ends_stop_offers(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wn")
    await api.client.post(f"/{ep}/cancel/{job_id}")
    assert (await api.stop_poll(ep, "wn")).json() == {"jobsToStop": [job_id]}
    # A queued job makes the take answer at once; its job_in_progress=0 is what counts.
    next_job = await api.submit(ep)
    assert (await api.take(ep, "wn", "?job_in_progress=0")).json()["id"] == next_job
    assert (await api.stop_poll(ep, "wn")).status_code == 204


@pytest.mark.slow
async def test_execution_timeout_times_out_and_stops(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wt", policy={"executionTimeout": 5000})
    status = await api.wait_status(ep, job_id, lambda s: s["status"] != "IN_PROGRESS", 12)
    assert status["status"] == "TIMED_OUT"
    assert 5000 <= status["executionTime"] < 8000
    assert (await api.stop_poll(ep, "wt")).json() == {"jobsToStop": [job_id]}
    assert (await api.done(ep, "wt", job_id, {"output": "late"})).status_code == 200
    assert (await api.status(ep, job_id))["status"] == "TIMED_OUT"


@pytest.mark.slow
async def test_ttl_in_queue_times_out(api: Api, ep: str) -> None:
    job_id = await api.submit(ep, policy={"ttl": 10000})
    status = await api.wait_status(ep, job_id, lambda s: s["status"] != "IN_QUEUE", 15)
    assert status["status"] == "TIMED_OUT"
    assert "workerId" not in status


async def test_stop_pod_recycles_the_worker(api: Api, ep: str) -> None:
    job_id = await api.running(ep, "wr")
    # The worker has a free slot, so it keeps a take open while it runs the job.
    pending = asyncio.create_task(api.take(ep, "wr", "?job_in_progress=1"))
    await asyncio.sleep(0.2)  # let the take start waiting; stopPod must wake it
    started = time.monotonic()
    reply = await api.done(ep, "wr", job_id, {"output": 1, "stopPod": True})
    assert reply.status_code == 200
    assert (await pending).status_code == 204
    assert time.monotonic() - started < TAKE_HOLD_S / 2
    queued = await api.submit(ep)
    started = time.monotonic()
    assert (await api.take(ep, "wr")).status_code == 204
    assert time.monotonic() - started < TAKE_HOLD_S / 2
    assert (await api.status(ep, queued))["status"] == "IN_QUEUE"
    assert (await api.status(ep, job_id))["status"] == "COMPLETED"


async def test_unhealthy_ping_marks_the_worker(api: Api, ep: str) -> None:
    assert (await api.worker.get(f"/{ep}/ping/wu?runpod_version=1.12.0")).status_code == 200
    await api.wait_health(ep, lambda h: h["workers"]["unhealthy"] == 0 and workers_seen(h) == 1)
    reply = await api.worker.get(
        f"/{ep}/ping/wu",
        params={
            "status": "unhealthy",
            "check": "memory",
            "reason": "2 GB free",
            "runpod_version": "1.12.0",
        },
    )
    assert reply.status_code == 200
    assert reply.json() == {}
    await api.wait_health(ep, lambda h: h["workers"]["unhealthy"] == 1)


# -- worker lost (its own server: leases of one second) ----------------------------------------


@pytest.mark.slow
async def test_lost_worker_job_is_requeued_then_failed(tmp_path: Path) -> None:
    server = start_server(tmp_path / "lost", NEUROQ_WORKER_LOST_S="1", NEUROQ_JOB_TAKE_HOLD_S="1")
    api = Api(server)
    ep = "ep-lost"
    try:
        job_id = await api.running(ep, "gone-1")
        # The worker goes silent: its lease lapses and the job goes back to the queue.
        status = await api.wait_status(ep, job_id, lambda s: s.get("retries") == 1, 10)
        assert status["status"] == "IN_QUEUE"
        assert "workerId" not in status
        reply = await api.take(ep, "gone-2")
        assert reply.json()["id"] == job_id
        status = await api.wait_status(ep, job_id, lambda s: s["status"] != "IN_PROGRESS", 10)
        assert status["status"] == "FAILED"
        assert "worker lost" in status["error"]
        assert status["retries"] == 1
        assert f"job {job_id} requeued" in server.log()
    finally:
        await api.aclose()
        server.stop()
