"""status?wait holds through a requeue: a job whose worker's lease lapsed goes back to the queue,
and a poll held on it goes on waiting for the job's end (or a progress update) instead of
answering IN_QUEUE. A server of its own, with a 1 s lease, so the lease lapses quickly; on both
stores (PostgreSQL skipped without NEUROQ_TEST_POSTGRES_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    STORE_BACKENDS,
    Background,
    RawWorker,
    ServerProcess,
    start_server,
    status,
    store_env,
    submit,
    wait_for,
)


@pytest.fixture(params=STORE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def short_lease_server(tmp_path: Path, backend: str) -> Iterator[ServerProcess]:
    """A server whose leases last 1 s (a worker that does not ping loses its job that soon),
    swept every 0.2 s."""
    with store_env(backend) as env:
        extra = {"NEUROQ_WORKER_LOST_S": "1", "NEUROQ_SWEEP_INTERVAL_S": "0.2", **env}
        proc = start_server(tmp_path / "server", NEUROQ_MAX_RETRIES="1", **extra)
        yield proc
        proc.stop()


def test_status_wait_holds_through_a_requeue(short_lease_server: ServerProcess, ep: str) -> None:
    srv = short_lease_server
    with srv.client() as client:
        worker = RawWorker(srv, ep)
        try:
            job_id = submit(client, ep)
            assert worker.take()["id"] == job_id
            poll = Background(lambda: client.get(f"/{ep}/status/{job_id}?wait=15000").json())
            # The worker never pings: its lease lapses and the sweep requeues the job.
            requeued = wait_for(
                lambda: status(client, ep, job_id),
                10,
                "the job to be requeued",
                until=lambda s: s["status"] == "IN_QUEUE" and s.get("retries") == 1,
            )
            assert requeued["status"] == "IN_QUEUE"
            assert not poll.done(within_s=0.3), "the requeue ended the hold"
            assert worker.take()["id"] == job_id
            worker.done(job_id, {"output": "second attempt"})
            body = poll.join(10)
            assert body["status"] == "COMPLETED" and body["output"] == "second attempt"
            assert body["retries"] == 1
        finally:
            worker.close()
