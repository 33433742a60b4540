"""The scaler inside `neuroq serve` does not wait for its next look to act on news: with a minute
between looks, an endpoint's new workersMin starts its worker, and a job queued on an endpoint at
zero workers starts one and is served, both within seconds."""

from __future__ import annotations

import time
from pathlib import Path

from fleet import (
    RECORD,
    SERVER_ENV,
    client,
    configure,
    new_endpoint,
    submit,
    wait_all_done,
    wait_for,
    worker_leaders,
)
from harness import start_server

#: far longer than any wait below: only a wake-up can explain a worker started in time
LOOK_INTERVAL_S = 120


def test_settings_and_submits_wake_the_scaler(tmp_path: Path) -> None:
    env = {**SERVER_ENV, "NEUROQ_SCALER_INTERVAL_S": str(LOOK_INTERVAL_S)}
    server = start_server(tmp_path / "srv", **env)
    try:
        warm, cold = new_endpoint("warm"), new_endpoint("cold")
        started = time.monotonic()
        configure(server, warm, handler=RECORD, workersMin=1, idleTimeout=60)
        wait_for(lambda: worker_leaders(server, warm), 30, "the workersMin worker")
        configure(server, cold, handler=RECORD, idleTimeout=60)
        assert worker_leaders(server, cold) == {}
        with client(server) as http:
            job_id = submit(http, cold, {"seconds": 0})
            wait_all_done(http, cold, [job_id], 30)
            assert http.get(f"/{cold}/status/{job_id}").json()["workerId"] in worker_leaders(
                server, cold
            )
        assert time.monotonic() - started < LOOK_INTERVAL_S / 2
    finally:
        server.stop()
