"""Long-polls held by one server wake within milliseconds when another server changes the job.

Two server processes share one PostgreSQL schema. Each is started with NEUROQ_RECHECK_S=5, so a
long-poll re-reads the store only every 5 s on its own: a wake-up well under that (WAKE_LIMIT_S)
can only come from the other server's NOTIFY reaching this one's LISTEN connection. Each
scenario holds a request on server A, checks it is still held, changes the job through server B
and measures from the end of B's reply to the end of A's. Skips without NEUROQ_TEST_POSTGRES_URL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import harness
import httpx
import pytest

RECHECK_S = 5.0
WAKE_LIMIT_S = 0.3
#: how long a poll is left waiting on A before B changes the job: long enough for the request to
#: reach A's wait (there is no outside signal that it has), far below RECHECK_S
HOLD_S = 0.5

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    with harness.store_env("postgres") as env:
        settings = {"NEUROQ_RECHECK_S": str(RECHECK_S), **env}
        a = harness.start_server(tmp_path_factory.mktemp("a"), **settings)
        try:
            b = harness.start_server(tmp_path_factory.mktemp("b"), **settings)
            yield a, b
            b.stop()
        finally:
            a.stop()


class Side:
    """One server seen by a client and by a raw-HTTP worker (the RunPod wire forms)."""

    def __init__(self, srv: Any, ep: str) -> None:
        self.ep = ep
        self.client = httpx.Client(base_url=srv.base_url, headers=srv.client_headers, timeout=60)
        self.worker = harness.RawWorker(srv, ep)

    def submit(self) -> str:
        return harness.submit(self.client, self.ep)

    def close(self) -> None:
        self.client.close()
        self.worker.close()


@pytest.fixture
def sides(servers: tuple[Any, Any], ep: str) -> Iterator[tuple[Side, Side]]:
    a, b = Side(servers[0], ep), Side(servers[1], ep)
    yield a, b
    a.close()
    b.close()


def wake_after(poll: Callable[[], Any], change: Callable[[], Any]) -> tuple[Any, float]:
    """Hold `poll` on one server, run `change` on the other; (poll result, wake-up seconds)."""
    held = harness.Background(poll)
    time.sleep(HOLD_S)  # the scenario itself: the poll must be waiting when the change lands
    assert held.ended is None, "the poll returned before anything changed"
    change()
    changed = time.monotonic()
    result = held.join(RECHECK_S * 3)
    assert held.ended is not None
    return result, held.ended - changed


def test_status_wait_wakes_on_cancel_elsewhere(sides: tuple[Side, Side]) -> None:
    a, b = sides
    job_id = b.submit()
    reply, wake_s = wake_after(
        lambda: a.client.get(f"/{a.ep}/status/{job_id}?wait=15000"),
        lambda: b.client.post(f"/{b.ep}/cancel/{job_id}"),
    )
    assert reply.json()["status"] == "CANCELLED"
    assert wake_s < WAKE_LIMIT_S


def test_runsync_wakes_on_result_posted_elsewhere(sides: tuple[Side, Side]) -> None:
    a, b = sides
    call = harness.Background(
        lambda: a.client.post(f"/{a.ep}/runsync?wait=20000", json={"input": 1})
    )
    job_id = b.worker.take("w-b")["id"]  # B's take is itself woken by A's submit
    reply, wake_s = wake_after(
        lambda: call.join(RECHECK_S * 3),
        lambda: b.worker.post("job-done", job_id, {"output": {"ok": 1}}, worker_id="w-b"),
    )
    assert reply.json()["status"] == "COMPLETED" and reply.json()["output"] == {"ok": 1}
    assert wake_s < WAKE_LIMIT_S


def test_job_take_wakes_on_submit_elsewhere(sides: tuple[Side, Side]) -> None:
    a, b = sides
    submitted: list[str] = []
    reply, wake_s = wake_after(
        lambda: a.worker.take_reply("w-a"), lambda: submitted.append(b.submit())
    )
    assert reply.status_code == 200 and reply.json()["id"] == submitted[0]
    assert wake_s < WAKE_LIMIT_S


def test_job_stop_wakes_on_cancel_elsewhere(sides: tuple[Side, Side]) -> None:
    a, b = sides
    job_id = b.submit()
    assert a.worker.take("w-stop")["id"] == job_id
    reply, wake_s = wake_after(
        lambda: a.worker.http.get(f"/{a.ep}/job-stop/w-stop?gpu=local"),
        lambda: b.client.post(f"/{b.ep}/cancel/{job_id}"),
    )
    assert reply.status_code == 200 and reply.json() == {"jobsToStop": [job_id]}
    assert wake_s < WAKE_LIMIT_S


def test_stream_wait_wakes_on_chunk_elsewhere(sides: tuple[Side, Side]) -> None:
    a, b = sides
    job_id = a.submit()
    assert b.worker.take("w-s")["id"] == job_id
    reply, wake_s = wake_after(
        lambda: a.client.get(f"/{a.ep}/stream/{job_id}?wait=15000"),
        lambda: b.worker.post("job-stream", job_id, {"output": "late"}, worker_id="w-s"),
    )
    assert reply.json()["stream"] == [{"output": "late"}]
    assert wake_s < WAKE_LIMIT_S


def test_event_stream_pushes_a_chunk_posted_elsewhere(sides: tuple[Side, Side]) -> None:
    a, b = sides
    job_id = a.submit()
    assert b.worker.take("w-sse")["id"] == job_id

    def first_event() -> str:
        headers = {"Accept": "text/event-stream"}
        with a.client.stream("GET", f"/{a.ep}/stream/{job_id}", headers=headers) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    return line.removeprefix("data:").strip()
        raise AssertionError("the event stream ended without an event")

    data, wake_s = wake_after(
        first_event,
        lambda: b.worker.post("job-stream", job_id, {"output": "pushed"}, worker_id="w-sse"),
    )
    assert json.loads(data) == {"output": "pushed"}
    assert wake_s < WAKE_LIMIT_S
