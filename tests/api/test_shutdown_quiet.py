"""A clean stop is quiet: a real server and `neuroq worker` (tests/harness.py), their logs read.

Stopping the server while a worker holds its job-take and job-stop long-polls logged two ASGI
tracebacks after uvicorn's 5 s graceful timeout; a worker that stopped on SIGTERM was logged
"lost" by the sweep `worker_lost_s` later. Both failed here first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from harness import ServerProcess, new_endpoint, start_server, start_worker, wait_for


def _live_workers(server: ServerProcess, ep: str) -> int:
    with server.client() as client:
        workers: dict[str, Any] = client.get(f"/{ep}/health").json()["workers"]
    return int(workers["idle"]) + int(workers["running"]) + int(workers["initializing"])


def _polls_held(server: ServerProcess, ep: str) -> None:
    """Wait until the worker is known and has had time to open both long-polls."""
    wait_for(lambda: _live_workers(server, ep), 15.0, "the worker's first contact")
    time.sleep(0.5)


def test_the_server_stops_at_once_and_silently_with_a_worker_attached(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv")
    ep = new_endpoint()
    worker = start_worker(server, "neuroq.demo_handlers:echo", ep, tmp_path, "--ping-interval", "1")
    try:
        _polls_held(server, ep)
        started = time.monotonic()
        server.terminate()
        elapsed_s = time.monotonic() - started
    finally:
        worker.stop()
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert " ERROR " not in log, log
    assert elapsed_s < 2.5, f"the server took {elapsed_s:.1f} s to stop"


def test_a_worker_that_stops_cleanly_is_not_logged_lost(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", NEUROQ_WORKER_LOST_S="1")
    ep = new_endpoint()
    worker = start_worker(
        server, "neuroq.demo_handlers:echo", ep, tmp_path, "--ping-interval", "0.3"
    )
    try:
        _polls_held(server, ep)
        worker.stop()
        assert worker.proc.returncode == 0, worker.log()
        wait_for(
            lambda: _live_workers(server, ep), 10.0, "the worker to be gone", until=lambda n: n == 0
        )
        time.sleep(1.5)  # past worker_lost_s and a sweep: a row written back would now be lost
    finally:
        worker.stop()
        server.stop()
    log = server.log()
    assert " lost" not in log, log
    assert "left" in log, log
