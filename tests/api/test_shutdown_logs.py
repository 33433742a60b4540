"""What the server logs around stopping: read from a real server's log (tests/harness.py)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from harness import start_server


def test_a_cancel_logs_its_stop_signal_once(tmp_path: Path) -> None:
    """A worker polls job-stop again at once after each reply, and the server re-offers a stopped
    job until the worker lets go of it (spec 2.8); the log said so on every re-offer, about once
    a second. One line per job and worker is enough."""
    server = start_server(tmp_path / "srv")
    try:
        with server.client() as client:
            job_id = client.post("/ep-stop/run", json={"input": {}}).json()["id"]
        worker = httpx.Client(base_url=server.base_url, headers=server.worker_headers, timeout=40)
        with worker:
            assert worker.get("/ep-stop/job-take/w-1").json()["id"] == job_id
            with server.client() as client:
                client.post(f"/ep-stop/cancel/{job_id}").raise_for_status()
            deadline = time.monotonic() + 4.5
            offers = 0
            while time.monotonic() < deadline:  # the SDK's pace: ask again as soon as answered
                reply = worker.get("/ep-stop/job-stop/w-1")
                offers += reply.status_code == 200
    finally:
        server.stop()
    assert offers >= 3, "the server should keep re-offering the stop while the job is held"
    lines = [line for line in server.log().splitlines() if "stop signal" in line]
    assert len(lines) == 1, lines
    assert job_id in lines[0]
