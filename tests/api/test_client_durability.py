"""What outlives a request: acknowledged jobs survive SIGKILL of the server, and finished jobs
disappear (404) once their retention runs out."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from harness import start_server


def test_acknowledged_jobs_survive_kill_9(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv")
    try:
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
            acknowledged = []
            for i in range(25):
                reply = client.post("/durable/run", json={"input": {"i": i}})
                assert reply.status_code == 200
                acknowledged.append(reply.json()["id"])
            cancelled = acknowledged[0]
            assert client.post(f"/durable/cancel/{cancelled}").json()["status"] == "CANCELLED"
        server.kill()
        server.start()
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
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
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
            finished = client.post("/ret/run", json={"input": 1}).json()["id"]
            live = client.post("/ret/run", json={"input": 2}).json()["id"]
            client.post(f"/ret/cancel/{finished}")
            cancelled_at = time.monotonic()
            assert client.get(f"/ret/status/{finished}").status_code == 200
            deadline = cancelled_at + 15
            while time.monotonic() < deadline:
                reply = client.get(f"/ret/status/{finished}")
                if reply.status_code == 404:
                    break
                time.sleep(0.1)
            assert reply.status_code == 404, reply.text
            assert "not found" in reply.json()["error"]
            assert time.monotonic() - cancelled_at >= 0.9
            # Retention counts from the end of a job: a queued job is untouched.
            assert client.get(f"/ret/status/{live}").json()["status"] == "IN_QUEUE"
    finally:
        server.stop()


def test_status_ttl_shortens_retention(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", NEUROQ_SWEEP_INTERVAL_S="0.2")
    try:
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
            job = client.post("/ttl/run", json={"input": 1}).json()["id"]
            client.post(f"/ttl/cancel/{job}")
            # Kept 30 min by default; ?ttl=1000 asks for at most one more second.
            asked_at = time.monotonic()
            assert client.get(f"/ttl/status/{job}?ttl=1000").json()["status"] == "CANCELLED"
            deadline = asked_at + 15
            while time.monotonic() < deadline:
                reply = client.get(f"/ttl/status/{job}")
                if reply.status_code == 404:
                    break
                time.sleep(0.1)
            assert reply.status_code == 404, reply.text
            assert time.monotonic() - asked_at >= 0.9
    finally:
        server.stop()
