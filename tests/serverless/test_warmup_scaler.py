"""A scaler-started worker whose handler module has a warm-up hook: it stays `initializing`
for as long as the hook runs (past the 2 s worker-lost time), the scaler adds no second worker
meanwhile, and the queued jobs run once it is ready."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from fleet import SERVER_ENV, client, configure, new_endpoint, submit, wait_for, worker_leaders
from harness import start_server

WARM_HANDLER = """
import os
import time
from pathlib import Path

GATE = Path(os.environ["WARM_GATE"])
READY = {"at": None}


def warmup():
    while not GATE.exists():
        time.sleep(0.05)
    READY["at"] = time.time()


def handler(job):
    return {"warmed": READY["at"] is not None}
"""


def test_a_warming_worker_stays_initializing_and_alone(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", **SERVER_ENV)
    try:
        handler = tmp_path / "warm_scaled.py"
        handler.write_text(WARM_HANDLER)
        gate = tmp_path / "gate"
        ep = new_endpoint("warm")
        configure(
            server,
            ep,
            handler=f"{handler}:handler",
            workersMax=3,
            scalerType="QUEUE_DELAY",
            scalerValue=1,
            env={"WARM_GATE": str(gate)},
        )
        with client(server) as c:
            ids = [submit(c, ep, n) for n in range(3)]

            def health() -> dict[str, int]:
                workers: dict[str, int] = c.get(f"/{ep}/health").json()["workers"]
                return workers

            wait_for(health, 30, "an initializing worker", until=lambda w: w["initializing"] == 1)
            # Jobs have waited past scalerValue, and past NEUROQ_WORKER_LOST_S: still one
            # worker, still initializing, nothing taken.
            time.sleep(3.0)
            assert len(worker_leaders(server, ep)) == 1
            workers = health()
            assert workers["initializing"] == 1 and workers["ready"] == 0, workers
            assert c.get(f"/{ep}/health").json()["jobs"]["inQueue"] == 3
            gate.touch()
            for job_id in ids:
                final = wait_for(
                    lambda job_id=job_id: c.get(f"/{ep}/status/{job_id}").json(),
                    60,
                    "the job to complete",
                    until=lambda s: s["status"] == "COMPLETED",
                )
                assert final["output"] == {"warmed": True}
        reply = httpx.delete(f"{server.url}/endpoints/{ep}", headers=server.client_headers)
        assert reply.status_code == 200
        wait_for(
            lambda: worker_leaders(server, ep), 30, "the workers to drain", until=lambda w: not w
        )
    finally:
        server.stop()
