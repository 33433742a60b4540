"""Client routes over real HTTP against a real server process: submit, status (and its ?wait
long-poll), idempotency, cancel, retry, purge, health, runsync, and both stream forms. The worker
side is played with raw HTTP on the worker routes, exactly as the RunPod SDK speaks them.

Every scenario runs twice, on a server whose store is SQLite and then on one whose store is a
PostgreSQL schema of its own (the `backend` parameter; skipped without NEUROQ_TEST_POSTGRES_URL),
so a scenario added here is checked on both stores."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from harness import (
    STORE_BACKENDS,
    Background,
    RawWorker,
    ServerProcess,
    read_events,
    start_server,
    status,
    store_env,
    submit,
)

TAKE_HOLD_S = 5.0
STATUS_MAX_WAIT_MS = 20_000


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, backend: str) -> Iterator[ServerProcess]:
    with store_env(backend) as env:
        proc = start_server(
            tmp_path_factory.mktemp(f"client-jobs-{backend}"),
            NEUROQ_JOB_TAKE_HOLD_S=str(TAKE_HOLD_S),
            NEUROQ_STATUS_MAX_WAIT_MS=str(STATUS_MAX_WAIT_MS),
            NEUROQ_RUNSYNC_DEFAULT_WAIT_MS="2000",
            **env,
        )
        yield proc
        proc.stop()


@pytest.fixture
def client(srv: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.base_url, headers=srv.client_headers, timeout=60) as c:
        yield c


@pytest.fixture
def worker(srv: ServerProcess, ep: str) -> Iterator[RawWorker]:
    w = RawWorker(srv, ep)
    yield w
    w.close()


# -- submit, status, idempotency ---------------------------------------------------------------


def test_run_then_status_in_queue(client: httpx.Client, ep: str) -> None:
    job_id = submit(client, ep, {"prompt": "hi"})
    assert status(client, ep, job_id) == {"id": job_id, "status": "IN_QUEUE"}
    post = client.post(f"/{ep}/status/{job_id}")
    assert post.status_code == 200 and post.json()["status"] == "IN_QUEUE"
    assert post.headers["content-type"] == "application/json"
    # A job is only visible on its own endpoint.
    assert client.get(f"/{ep}-other/status/{job_id}").status_code == 404


def test_full_lifecycle_through_worker(client: httpx.Client, ep: str, worker: RawWorker) -> None:
    job_id = submit(client, ep, {"x": 1}, s3Config={"bucketName": "b"})
    job = worker.take()
    assert job["id"] == job_id and job["input"] == {"x": 1}
    assert job["s3Config"] == {"bucketName": "b"}
    running = status(client, ep, job_id)
    assert running["status"] == "IN_PROGRESS" and running["workerId"] == "w-test"
    worker.done(job_id, {"output": {"y": 2}})
    final = status(client, ep, job_id)
    assert final["status"] == "COMPLETED" and final["output"] == {"y": 2}
    assert isinstance(final["delayTime"], int) and isinstance(final["executionTime"], int)
    assert "s3Config" not in final


def test_idempotency_key_returns_the_same_job(client: httpx.Client, ep: str) -> None:
    key = {"Idempotency-Key": "order-42"}
    first = client.post(f"/{ep}/run", json={"input": 1}, headers=key).json()["id"]
    again = client.post(f"/{ep}/run", json={"input": 2}, headers=key).json()["id"]
    assert again == first
    elsewhere = client.post(f"/{ep}-b/run", json={"input": 1}, headers=key).json()["id"]
    assert elsewhere != first
    without = client.post(f"/{ep}/run", json={"input": 1}).json()["id"]
    assert without != first
    assert client.get(f"/{ep}/health").json()["jobs"]["inQueue"] == 2


# -- cancel, retry, purge, health --------------------------------------------------------------


def test_cancel_queued_job(client: httpx.Client, ep: str) -> None:
    job_id = submit(client, ep)
    reply = client.post(f"/{ep}/cancel/{job_id}")
    assert reply.status_code == 200
    assert reply.json() == {"id": job_id, "status": "CANCELLED"}
    assert status(client, ep, job_id)["status"] == "CANCELLED"
    # Cancelling again returns the terminal job unchanged.
    assert client.post(f"/{ep}/cancel/{job_id}").json()["status"] == "CANCELLED"


def test_retry_failed_job_and_refuse_completed(
    client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    failed_id = submit(client, ep)
    worker.take()
    worker.done(failed_id, {"error": "bad"})
    assert status(client, ep, failed_id)["error"] == "bad"
    reply = client.post(f"/{ep}/retry/{failed_id}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["id"] == failed_id and reply.json()["status"] == "IN_QUEUE"
    again = status(client, ep, failed_id)
    assert again["retries"] == 1 and "error" not in again
    retaken = worker.take()
    assert retaken["id"] == failed_id
    worker.done(failed_id, {"output": "ok"})
    reply = client.post(f"/{ep}/retry/{failed_id}")
    assert reply.status_code == 400
    assert "COMPLETED" in reply.json()["error"]
    assert client.get(f"/{ep}/health").json()["jobs"]["retried"] == 1


def test_purge_queue_cancels_only_queued(client: httpx.Client, ep: str, worker: RawWorker) -> None:
    running = submit(client, ep)
    worker.take()
    queued = [submit(client, ep) for _ in range(3)]
    reply = client.post(f"/{ep}/purge-queue")
    assert reply.status_code == 200
    assert reply.json() == {"removed": 3, "status": "completed"}
    assert {status(client, ep, j)["status"] for j in queued} == {"CANCELLED"}
    assert status(client, ep, running)["status"] == "IN_PROGRESS"


def test_health_has_every_key_as_integers(client: httpx.Client, ep: str) -> None:
    submit(client, ep)
    body = client.get(f"/{ep}/health").json()
    assert set(body["jobs"]) == {"completed", "failed", "inProgress", "inQueue", "retried"}
    assert set(body["workers"]) == {
        "idle",
        "initializing",
        "ready",
        "running",
        "throttled",
        "unhealthy",
    }
    assert all(isinstance(v, int) for group in body.values() for v in group.values())
    assert body["jobs"]["inQueue"] == 1


# -- long-polls --------------------------------------------------------------------------------


def test_status_wait_returns_early_on_cancel(client: httpx.Client, ep: str) -> None:
    job_id = submit(client, ep)
    poll = Background(lambda: client.get(f"/{ep}/status/{job_id}?wait=15000").json())
    client.post(f"/{ep}/cancel/{job_id}")
    body = poll.join(10)
    assert body["status"] == "CANCELLED"
    assert poll.elapsed_s < 5


def test_status_wait_returns_early_on_progress(
    client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    """The long-poll wakes on a progress update, not only on a state change. Progress is posted
    repeatedly until the poll returns, so it does not matter whether the poll arrived first."""
    job_id = submit(client, ep)
    worker.take()
    poll = Background(lambda: client.get(f"/{ep}/status/{job_id}?wait=15000").json())
    step = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        step += 1
        worker.progress(job_id, {"step": step})
        if poll.done(within_s=0.2):
            break
    body = poll.join(1)
    assert body["status"] == "IN_PROGRESS"
    assert body["output"]["step"] >= 1
    assert poll.elapsed_s < 10


def test_status_wait_sent_while_queued_answers_the_end_in_one_request(
    client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    """A job starting does not end the hold: a poll that finds the job IN_QUEUE, whose worker
    takes it and finishes it shortly after, answers COMPLETED, so one long-poll serves a short
    job (it used to answer IN_PROGRESS at the take, and the client had to poll again)."""
    job_id = submit(client, ep)
    poll = Background(lambda: client.get(f"/{ep}/status/{job_id}?wait=15000").json())
    assert not poll.done(within_s=0.5), "the poll returned while the job waited in the queue"
    assert worker.take()["id"] == job_id
    assert not poll.done(within_s=0.5), "the take ended the hold"
    worker.done(job_id, {"output": {"ok": True}})
    body = poll.join(10)
    assert body["status"] == "COMPLETED" and body["output"] == {"ok": True}
    assert poll.elapsed_s < 10


def test_status_wait_sent_while_queued_ends_on_progress(
    client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    """Progress still ends the hold of a poll that found the job IN_QUEUE, the take not."""
    job_id = submit(client, ep)
    poll = Background(lambda: client.get(f"/{ep}/status/{job_id}?wait=15000").json())
    assert not poll.done(within_s=0.5)
    worker.take()
    assert not poll.done(within_s=0.5), "the take ended the hold"
    worker.progress(job_id, {"step": 1})
    body = poll.join(10)
    assert body["status"] == "IN_PROGRESS" and body["output"] == {"step": 1}
    assert poll.elapsed_s < 10


def test_status_wait_times_out_unchanged(client: httpx.Client, ep: str) -> None:
    job_id = submit(client, ep)
    started = time.monotonic()
    body = client.get(f"/{ep}/status/{job_id}?wait=700").json()
    assert body["status"] == "IN_QUEUE"
    assert 0.6 <= time.monotonic() - started < 5


def test_status_sync_waits_for_terminal(client: httpx.Client, ep: str, worker: RawWorker) -> None:
    job_id = submit(client, ep)
    poll = Background(lambda: client.get(f"/{ep}/status-sync/{job_id}?wait=15000").json())
    worker.take()
    worker.progress(job_id, "half")  # not terminal: the poll keeps waiting
    worker.done(job_id, {"output": "all"})
    body = poll.join(10)
    assert body["status"] == "COMPLETED" and body["output"] == "all"


def test_runsync_returns_result_when_done(client: httpx.Client, ep: str, worker: RawWorker) -> None:
    call = Background(
        lambda: client.post(f"/{ep}/runsync?wait=20000", json={"input": {"q": 1}}).json()
    )
    job = worker.take()  # long-polls until runsync's job is queued
    assert job["id"].startswith("sync-")
    worker.done(job["id"], {"output": {"a": 42}})
    body = call.join(10)
    assert body == {**body, "id": job["id"], "status": "COMPLETED", "output": {"a": 42}}
    assert call.elapsed_s < 10


def test_runsync_gives_up_after_wait(client: httpx.Client, ep: str) -> None:
    started = time.monotonic()
    body = client.post(f"/{ep}/runsync?wait=1", json={"input": 1}).json()
    assert body["status"] == "IN_QUEUE"
    # wait is clamped up to 1000 ms.
    assert 0.9 <= time.monotonic() - started < 5


# -- stream ------------------------------------------------------------------------------------


def test_stream_json_read_consumes(client: httpx.Client, ep: str, worker: RawWorker) -> None:
    job_id = submit(client, ep)
    empty = client.get(f"/{ep}/stream/{job_id}").json()
    assert empty == {"id": job_id, "status": "IN_QUEUE", "stream": []}
    worker.take()
    worker.chunk(job_id, "a")
    worker.chunk(job_id, {"b": [1, 2]})
    first = client.post(f"/{ep}/stream/{job_id}").json()
    assert first["status"] == "IN_PROGRESS"
    assert first["stream"] == [{"output": "a"}, {"output": {"b": [1, 2]}}]
    worker.chunk(job_id, "c")
    worker.done(job_id, {"output": []})
    second = client.get(f"/{ep}/stream/{job_id}").json()
    assert second == {"id": job_id, "status": "COMPLETED", "stream": [{"output": "c"}]}
    assert client.get(f"/{ep}/stream/{job_id}").json()["stream"] == []


def test_stream_json_wait_holds_for_a_chunk(
    client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    job_id = submit(client, ep)
    worker.take()
    poll = Background(lambda: client.get(f"/{ep}/stream/{job_id}?wait=15000").json())
    worker.chunk(job_id, "late")
    body = poll.join(10)
    assert body["stream"] == [{"output": "late"}]
    assert poll.elapsed_s < 5


def test_event_stream_pushes_chunks_then_status(
    client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    job_id = submit(client, ep)
    worker.take()
    worker.chunk(job_id, "one")
    headers = {"Accept": "text/event-stream"}
    seen: list[dict[str, str]] = []
    with client.stream("GET", f"/{ep}/stream/{job_id}", headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response):
            seen.append(event)
            if len(seen) == 1:
                # Pushed as it arrives: the second chunk is posted only after the first event.
                worker.chunk(job_id, {"two": 2})
            elif len(seen) == 2:
                worker.done(job_id, {"output": ["one", {"two": 2}]})
    assert [e.get("id") for e in seen] == ["1", "2", None]
    assert json.loads(seen[0]["data"]) == {"output": "one"}
    assert json.loads(seen[1]["data"]) == {"output": {"two": 2}}
    assert seen[2]["event"] == "status"
    final = json.loads(seen[2]["data"])
    assert final["status"] == "COMPLETED" and final["output"] == ["one", {"two": 2}]

    # Resuming after event 1 replays only what came later; the JSON cursor never moved.
    resume = {**headers, "Last-Event-ID": "1"}
    with client.stream("GET", f"/{ep}/stream/{job_id}", headers=resume) as response:
        replay = list(read_events(response))
    assert [e.get("id") for e in replay] == ["2", None]
    assert len(client.get(f"/{ep}/stream/{job_id}").json()["stream"]) == 2
