"""What outlives a request: acknowledged jobs survive SIGKILL of the server, and finished jobs
disappear (404) once their retention runs out."""

from __future__ import annotations

import time
from pathlib import Path

from harness import start_server, wait_for


def test_acknowledged_jobs_survive_kill_9(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv")
    try:
        with server.client() as client:
            acknowledged = []
            for i in range(25):
                reply = client.post("/durable/run", json={"input": {"i": i}})
                assert reply.status_code == 200
                acknowledged.append(reply.json()["id"])
            cancelled = acknowledged[0]
            assert client.post(f"/durable/cancel/{cancelled}").json()["status"] == "CANCELLED"
        server.kill()
        server.start()
        with server.client() as client:
            states = {j: client.get(f"/durable/status/{j}").json()["status"] for j in acknowledged}
            assert states.pop(cancelled) == "CANCELLED"
            assert set(states.values()) == {"IN_QUEUE"}
            assert client.get("/durable/health").json()["jobs"]["inQueue"] == 24
    finally:
        server.stop()


def test_finished_run_job_expires_after_retention(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "srv", NEUROQ_RETENTION_RUN_S="1", NEUROQ_SWEEP_INTERVAL_S="0.2"
    )
    try:
        with server.client() as client:
            finished = client.post("/ret/run", json={"input": 1}).json()["id"]
            live = client.post("/ret/run", json={"input": 2}).json()["id"]
            client.post(f"/ret/cancel/{finished}")
            cancelled_at = time.monotonic()
            assert client.get(f"/ret/status/{finished}").status_code == 200
            reply = wait_for(
                lambda: client.get(f"/ret/status/{finished}"),
                15,
                "the finished job to expire",
                until=lambda reply: reply.status_code == 404,
            )
            assert "not found" in reply.json()["error"]
            assert time.monotonic() - cancelled_at >= 0.9
            # Retention counts from the end of a job: a queued job is untouched.
            assert client.get(f"/ret/status/{live}").json()["status"] == "IN_QUEUE"
    finally:
        server.stop()


def test_status_ttl_shortens_retention(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", NEUROQ_SWEEP_INTERVAL_S="0.2")
    try:
        with server.client() as client:
            job = client.post("/ttl/run", json={"input": 1}).json()["id"]
            client.post(f"/ttl/cancel/{job}")
            # Kept 30 min by default; ?ttl=1000 asks for at most one more second.
            asked_at = time.monotonic()
            assert client.get(f"/ttl/status/{job}?ttl=1000").json()["status"] == "CANCELLED"
            wait_for(
                lambda: client.get(f"/ttl/status/{job}"),
                15,
                "the job to expire after its ttl",
                until=lambda reply: reply.status_code == 404,
            )
            assert time.monotonic() - asked_at >= 0.9
    finally:
        server.stop()
