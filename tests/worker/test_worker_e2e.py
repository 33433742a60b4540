"""`neuroq worker` processes against a real `neuroq serve` on loopback: every handler kind,
streaming, progress, failures, concurrency, cancel, SIGTERM and kill -9 recovery."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
from harness import collect_stream, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

DEMO = "neuroq.demo_handlers"


@pytest.mark.parametrize(
    ("handler", "input_", "output"),
    [
        ("echo", {"a": [1, "é"]}, {"a": [1, "é"]}),
        ("noop", {}, {"ok": True}),
        ("stream", {"count": 3}, [{"i": 0}, {"i": 1}, {"i": 2}]),  # aggregated
        ("stream_sync", {"text": "a b"}, []),  # not aggregated
    ],
)
def test_each_handler_kind_completes(
    e2e: Any, endpoint: str, handler: str, input_: Any, output: Any
) -> None:
    e2e.worker(f"{DEMO}:{handler}", endpoint)
    result = e2e.runsync(endpoint, input_)
    if result["status"] != "COMPLETED":
        result = e2e.wait_done(endpoint, result["id"])
    assert result["status"] == "COMPLETED", result
    assert result["output"] == output


def test_async_handler_from_a_file(e2e: Any, endpoint: str, tmp_path: Path) -> None:
    path = tmp_path / "my_handler.py"
    path.write_text("async def run(job):\n    return {'double': job['input']['n'] * 2}\n")
    e2e.worker(f"{path}:run", endpoint)
    job_id = e2e.run(endpoint, {"n": 21})
    assert e2e.wait_done(endpoint, job_id)["output"] == {"double": 42}


def test_generator_chunks_arrive_in_order(e2e: Any, endpoint: str) -> None:
    e2e.worker(f"{DEMO}:stream", endpoint)
    job_id = e2e.run(endpoint, {"count": 8, "delay": 0.05})
    chunks = collect_stream(e2e.http, endpoint, job_id, 15)
    assert chunks == [{"i": i} for i in range(8)]
    assert e2e.status(endpoint, job_id)["output"] == chunks


def test_progress_is_visible_while_running(e2e: Any, endpoint: str) -> None:
    e2e.worker(f"{DEMO}:progress", endpoint)
    job_id = e2e.run(endpoint, {"seconds": 1.5})
    seen = e2e.wait_status(endpoint, job_id, lambda s: s.get("output") == {"step": 1})
    assert seen["status"] == "IN_PROGRESS"
    e2e.wait_status(endpoint, job_id, lambda s: s.get("output") == {"step": 2})
    final = e2e.wait_done(endpoint, job_id)
    assert final["status"] == "COMPLETED" and final["output"] == {"done": True}


def test_exception_fails_the_job_with_its_message(e2e: Any, endpoint: str) -> None:
    e2e.worker(f"{DEMO}:fail", endpoint)
    job_id = e2e.run(endpoint, {"message": "out of cheese"})
    final = e2e.wait_done(endpoint, job_id)
    assert final["status"] == "FAILED"
    error = json.loads(final["error"])
    assert error == {"error_type": "<class 'RuntimeError'>", "error_message": "out of cheese"}


def test_concurrency_overlaps_jobs(e2e: Any, endpoint: str) -> None:
    ids = [e2e.run(endpoint, {"seconds": 1.5}) for _ in range(3)]
    e2e.worker(f"{DEMO}:sleep", endpoint, "--concurrency", "3")
    # Direct evidence of overlap: all three are running at the same moment.
    wait_for(
        lambda: [e2e.status(endpoint, i)["status"] for i in ids],
        15,
        "the three jobs to run at the same time",
        0.02,
        until=lambda states: states == ["IN_PROGRESS"] * 3,
    )
    finals = [e2e.wait_done(endpoint, job_id) for job_id in ids]
    assert [f["status"] for f in finals] == ["COMPLETED"] * 3


def test_cancel_stops_a_running_async_handler(e2e: Any, endpoint: str, tmp_path: Path) -> None:
    marker = tmp_path / "cancelled"
    e2e.worker(f"{DEMO}:sleep", endpoint)
    job_id = e2e.run(endpoint, {"seconds": 30, "marker": str(marker)})
    e2e.wait_status(endpoint, job_id, lambda s: s["status"] == "IN_PROGRESS")
    assert e2e.http.post(f"/{endpoint}/cancel/{job_id}").status_code == 200
    wait_for(marker.exists, 10, "the handler to see CancelledError", 0.05)
    assert marker.read_text() == "cancelled"
    # The same worker takes the next job, and the cancelled one stays cancelled.
    next_id = e2e.run(endpoint, {"seconds": 0})
    assert e2e.wait_done(endpoint, next_id)["status"] == "COMPLETED"
    assert e2e.status(endpoint, job_id)["status"] == "CANCELLED"


def test_sigterm_finishes_the_in_flight_job_then_exits_0(e2e: Any, endpoint: str) -> None:
    worker = e2e.worker(f"{DEMO}:sleep", endpoint)
    job_id = e2e.run(endpoint, {"seconds": 1.5})
    e2e.wait_status(endpoint, job_id, lambda s: s["status"] == "IN_PROGRESS")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(15) == 0, worker.log()
    final = e2e.status(endpoint, job_id)
    assert final["status"] == "COMPLETED" and final["output"]["slept"] == 1.5
    # A job submitted after the signal is left for other workers.
    later = e2e.run(endpoint, {"seconds": 0})
    assert e2e.status(endpoint, later)["status"] == "IN_QUEUE"


def test_kill_9_mid_job_is_completed_once_by_another_worker(e2e: Any, endpoint: str) -> None:
    first = e2e.worker(f"{DEMO}:sleep", endpoint, "--worker-id", f"{endpoint}-a")
    job_id = e2e.run(endpoint, {"seconds": 2})
    running = e2e.wait_status(endpoint, job_id, lambda s: s["status"] == "IN_PROGRESS")
    assert running["workerId"] == f"{endpoint}-a"
    first.kill()
    second = e2e.worker(f"{DEMO}:sleep", endpoint, "--worker-id", f"{endpoint}-b")
    final = e2e.wait_done(endpoint, job_id, timeout_s=30)
    assert final["status"] == "COMPLETED", final
    assert final["retries"] == 1
    assert final["workerId"] == f"{endpoint}-b"
    assert final["output"]["pid"] == second.proc.pid
    wait_for(
        second.log,
        10,
        f"the second worker to log job {job_id} completed",
        0.05,
        until=lambda log: f"job {job_id} completed" in log,
    )
    assert second.log().count(f"job {job_id} completed") == 1
    # The server marks the job IN_PROGRESS when it hands it out, which may be before the first
    # worker logs "started"; either way that worker never started it twice.
    assert first.log().count(f"job {job_id} started") <= 1


def test_burst_worker_drains_the_queue_and_exits(e2e: Any, endpoint: str) -> None:
    ids = [e2e.run(endpoint, {"i": i}) for i in range(3)]
    worker = e2e.worker(f"{DEMO}:echo", endpoint, "--burst", "--concurrency", "2")
    assert worker.proc.wait(20) == 0, worker.log()
    assert [e2e.status(endpoint, i)["output"] for i in ids] == [{"i": 0}, {"i": 1}, {"i": 2}]


def test_burst_worker_exits_soon_after_the_queue_empties(tmp_path: Path, endpoint: str) -> None:
    """A burst worker asks with a short `wait=`, so it does not sit out the server's whole take
    hold (here 60 s) once the queue is empty."""
    server = harness.start_server(tmp_path / "srv", NEUROQ_JOB_TAKE_HOLD_S="60")
    worker = None
    try:
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as http:
            ids = [harness.submit(http, endpoint, {"i": i}) for i in range(3)]
            worker = harness.start_worker(
                server, f"{DEMO}:echo", endpoint, tmp_path, "--burst", "--concurrency", "2"
            )
            assert worker.proc.wait(20) == 0, worker.log()
            outputs = [harness.status(http, endpoint, i)["output"] for i in ids]
            assert outputs == [{"i": 0}, {"i": 1}, {"i": 2}]
    finally:
        if worker is not None:
            worker.stop()
        server.stop()


def test_cli_errors_are_clear(e2e: Any, endpoint: str) -> None:
    bad = e2e.worker(f"{DEMO}:nope", endpoint)
    assert bad.proc.wait(15) == 2
    assert "'neuroq.demo_handlers' has no attribute 'nope'" in bad.log()


def test_wrong_key_exits_1_saying_so(e2e: Any, endpoint: str) -> None:
    bad = e2e.worker(f"{DEMO}:echo", endpoint, NEUROQ_WORKER_KEY="not-the-key")
    assert bad.proc.wait(20) == 1, bad.log()
    assert "refused the worker key" in bad.log()
