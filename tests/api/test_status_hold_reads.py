"""A `status?wait` on a job this server has just queued starts its hold without reading the job
(`JobStore.recently_submitted`): on the users' path (`/run`, then `status?wait`) the first
status request of a job costs no store read. Counted on the app's own store, in process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import WORKER_KEY, in_process_app, new_endpoint
from starlette.testclient import TestClient

from neuroq.jobs import Job

#: what a 200 ms hold on a job that does not change reads (recheck_s is longer): the check at
#: its deadline and the answer
HOLD_READS = 2


@pytest.fixture
def app(tmp_path: Path) -> Iterator[TestClient]:
    with in_process_app(tmp_path, scaler=False) as client:
        yield client


@pytest.fixture
def reads(app: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the jobs the app's store reads, in order."""
    store = app.app.state.store  # type: ignore[attr-defined]
    read = store.get
    seen: list[str] = []

    async def counted(endpoint_id: str, job_id: str) -> Job | None:
        seen.append(job_id)
        return await read(endpoint_id, job_id)

    monkeypatch.setattr(store, "get", counted)
    return seen


def test_a_hold_on_a_job_queued_here_starts_without_a_read(
    app: TestClient, reads: list[str]
) -> None:
    ep = new_endpoint("hold")
    job_id = app.post(f"/{ep}/run", json={"input": 1}).json()["id"]
    body = app.get(f"/{ep}/status/{job_id}?wait=200").json()
    assert body["status"] == "IN_QUEUE" and body["id"] == job_id
    # Reads: the hold's check at its deadline and the answer, not one to start the hold.
    assert reads == [job_id] * HOLD_READS


def test_a_plain_status_and_a_changed_job_are_read(app: TestClient, reads: list[str]) -> None:
    ep = new_endpoint("hold")
    job_id = app.post(f"/{ep}/run", json={"input": 1}).json()["id"]
    assert app.get(f"/{ep}/status/{job_id}").json()["status"] == "IN_QUEUE"
    assert reads == [job_id]
    # A progress update moves the job's output topic: the hold starts with a read.
    worker = {"Authorization": WORKER_KEY}
    taken = app.get(f"/{ep}/job-take/w-1?gpu=local&job_in_progress=0", headers=worker)
    assert taken.json()["id"] == job_id
    progress = app.post(
        f"/{ep}/job-done/w-1/{job_id}?gpu=local&isStream=false",
        headers=worker,
        json={"status": "IN_PROGRESS", "output": "half way"},
    )
    assert progress.status_code == 200, progress.text
    reads.clear()
    body = app.get(f"/{ep}/status/{job_id}?wait=200").json()
    assert body["status"] == "IN_PROGRESS" and body["output"] == "half way"
    assert reads == [job_id] * (1 + HOLD_READS)


def test_another_endpoints_job_is_not_found(app: TestClient, reads: list[str]) -> None:
    ep = new_endpoint("hold")
    job_id = app.post(f"/{ep}/run", json={"input": 1}).json()["id"]
    reply = app.get(f"/{new_endpoint('other')}/status/{job_id}?wait=200")
    assert reply.status_code == 404
