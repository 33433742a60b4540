"""A real zombie: a `neuroq worker` process frozen with SIGSTOP past its lease while running a
job, the job taken again by a second worker process, and the first thawed with SIGCONT. The job
must end once, with the second worker's result; the first's late result is answered "ignored"
and changes nothing.

Each handler waits for a gate file, so the test decides when each result is posted: the zombie's
first (while the second worker still holds the job), then the holder's.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest
from harness import (
    WorkerProcess,
    new_endpoint,
    start_server,
    start_worker,
    status,
    submit,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

LEASE_S = 2.0

HANDLER = """
import asyncio
import os
from pathlib import Path

async def handler(job):
    here = Path(__file__).parent
    tag = os.environ["ZOMBIE_TEST_TAG"]
    (here / f"started-{tag}").write_text(job["id"])
    while not (here / f"go-{tag}").exists():
        await asyncio.sleep(0.05)
    return {"by": tag}
"""


def _signal_group(worker: WorkerProcess, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.proc.pid, signum)


def test_a_thawed_zombie_worker_result_is_ignored_and_the_holder_result_wins(
    tmp_path: Path,
) -> None:
    ep = new_endpoint("zombie")
    handler = tmp_path / "gated.py"
    handler.write_text(HANDLER)
    lease = {"NEUROQ_WORKER_LOST_S": str(LEASE_S), "NEUROQ_MAX_RETRIES": "2"}
    srv = start_server(tmp_path / "srv", NEUROQ_JOB_TAKE_HOLD_S="1", **lease)
    workers: list[WorkerProcess] = []

    def start(tag: str) -> WorkerProcess:
        args = ("--worker-id", f"w-{tag}", "--ping-interval", "0.3", "--grace", "1")
        worker = start_worker(srv, f"{handler}:handler", ep, tmp_path, *args, ZOMBIE_TEST_TAG=tag)
        workers.append(worker)
        return worker

    try:
        with srv.client() as http:
            zombie = start("a")
            job_id = submit(http, ep)
            wait_for((tmp_path / "started-a").exists, 30, "worker a to start the job")
            _signal_group(zombie, signal.SIGSTOP)

            start("b")
            held = wait_for(
                lambda: status(http, ep, job_id),
                30,
                "worker b to hold the job's next attempt",
                until=lambda s: s.get("workerId") == "w-b",
            )
            assert held["status"] == "IN_PROGRESS" and held["retries"] == 1, held
            wait_for((tmp_path / "started-b").exists, 30, "worker b to start the job")

            (tmp_path / "go-a").touch()
            _signal_group(zombie, signal.SIGCONT)
            wait_for(
                lambda: f"job {job_id} completed" in zombie.log(),
                30,
                "the zombie to post its late result",
            )
            ignored = f"post from worker w-a on {ep} ignored: job {job_id} is held by another"
            assert ignored in srv.log()
            still = status(http, ep, job_id)
            assert still["status"] == "IN_PROGRESS" and still["workerId"] == "w-b", still

            (tmp_path / "go-b").touch()
            final = wait_for(
                lambda: status(http, ep, job_id),
                30,
                "the job to end",
                until=lambda s: s["status"] != "IN_PROGRESS",
            )
            assert final["status"] == "COMPLETED" and final["output"] == {"by": "b"}, final
            assert final["retries"] == 1 and final["workerId"] == "w-b"
    finally:
        for worker in workers:
            _signal_group(worker, signal.SIGCONT)
            worker.stop()
        srv.stop()
