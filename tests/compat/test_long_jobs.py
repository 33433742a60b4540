"""Long jobs keep their lease through heartbeats alone, with every kind of worker we support.

A lease is renewed only by evidence that the worker holds that job (a ping naming it, or a post
for it), never by a take or a stop poll. So a job that runs ten leases long must survive on its
worker's pings: an unmodified SDK worker with a real pod id, one whose job-take template keeps a
literal `$RUNPOD_POD_ID` (its take is anonymous, which the server accepts only with
NEUROQ_ANONYMOUS_WORKERS; its pings come under its real id), and our own worker. Each job must
run once and complete without a retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runpod
from harness import ServerProcess, start_server, start_worker, wait_for, worker_env
from sdk_harness import Api, start_sdk_worker

#: three SDK ping intervals (1 s, its least): one ping delayed by a loaded machine must not
#: cost a lease
LEASE_S = 3.0
JOB_S = 10 * LEASE_S
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}

OUR_HANDLER = """
import asyncio
from pathlib import Path

async def handler(job):
    with open(Path(__file__).with_name("starts.txt"), "a") as f:
        f.write(job["id"] + "\\n")
    await asyncio.sleep(job["input"]["seconds"])
    return {"slept": job["input"]["seconds"]}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path_factory.mktemp("long-jobs"),
        NEUROQ_WORKER_LOST_S=str(LEASE_S),
        NEUROQ_JOB_TAKE_HOLD_S="1",
        NEUROQ_JOB_STOP_HOLD_S="1",
        NEUROQ_ANONYMOUS_WORKERS="true",
    )
    yield srv
    srv.stop()


@pytest.mark.slow
def test_ten_lease_jobs_survive_on_heartbeats(
    server: ServerProcess, sdk: None, api: Api, tmp_path: Path
) -> None:
    named = start_sdk_worker(server, "async_worker.py", "long-named", "pod-named", tmp_path)
    template = worker_env(server, server.url, "long-anon", "pod-anon")
    anon_take = template["RUNPOD_WEBHOOK_GET_JOB"].replace("$ID", "$RUNPOD_POD_ID")
    anonymous = start_sdk_worker(
        server,
        "async_worker.py",
        "long-anon",
        "pod-anon",
        tmp_path / "anon",
        RUNPOD_WEBHOOK_GET_JOB=anon_take,
    )
    handler_file = tmp_path / "ours" / "long_handler.py"
    handler_file.parent.mkdir()
    handler_file.write_text(OUR_HANDLER)
    ours = start_worker(
        server, f"{handler_file}:handler", "long-ours", tmp_path, "--ping-interval", "0.5"
    )
    try:
        jobs: dict[str, Any] = {
            ep: runpod.Endpoint(ep).run({"op": "sleep", "seconds": JOB_S})
            for ep in ("long-named", "long-anon")
        }
        jobs["long-ours"] = runpod.Endpoint("long-ours").run({"seconds": JOB_S})
        for ep, job in jobs.items():
            status = api.wait_status(ep, job.job_id, {"IN_PROGRESS", *TERMINAL}, 30)
            assert status["status"] == "IN_PROGRESS", (ep, status)
        anon_status = api.status("long-anon", jobs["long-anon"].job_id)
        assert anon_status["workerId"].startswith("anon-")  # the take was anonymous
        for ep, job in jobs.items():
            status = api.wait_status(ep, job.job_id, TERMINAL, JOB_S + 30)
            assert status["status"] == "COMPLETED", (ep, status)
            assert status["output"] == {"slept": JOB_S}
            assert "retries" not in status, (ep, status)
        for worker in (named, anonymous):
            starts = [e for e in worker.events() if e.get("event") == "start"]
            assert len(starts) == 1, worker.events()
        starts = (handler_file.parent / "starts.txt").read_text().split()
        assert starts == [jobs["long-ours"].job_id]
    finally:
        for sdk_worker in (named, anonymous):
            sdk_worker.kill()
        ours.stop()
    wait_for(lambda: ours.proc.poll() is not None, 15, "our worker to exit")
