"""Worker life cycles under the scaler, with real processes: a worker killed with -9 is
replaced and its job runs again once; scaling down (idle timeout, or workersMax lowered) drains
a worker without cutting the job it runs; a server killed with -9 and restarted leaves no
orphan and no second fleet; `neuroq scaler --url` scales a server's endpoint from outside it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
from fleet import (
    RECORD,
    SERVER_ENV,
    client,
    configure,
    new_endpoint,
    runs,
    submit,
    wait_all_done,
    wait_for,
    worker_leaders,
)
from harness import end_group, spawn, start_server


def _status(http: httpx.Client, ep: str, job_id: str) -> dict[str, object]:
    body: dict[str, object] = http.get(f"/{ep}/status/{job_id}").json()
    return body


def test_worker_killed_with_sigkill_is_replaced_and_its_job_runs_again_once(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "server", **SERVER_ENV)
    try:
        ep, log = new_endpoint("kill"), tmp_path / "runs.log"
        configure(server, ep, handler=RECORD, workersMin=1, workersMax=1, idleTimeout=60)
        with client(server) as http:
            job_id = submit(http, ep, {"seconds": 2.0, "log": str(log)})
            wait_for(lambda: _status(http, ep, job_id)["status"], 20, "job running",
                     until=lambda s: s == "IN_PROGRESS")  # fmt: skip
            (victim,) = worker_leaders(server, ep).items()
            os.killpg(victim[1], signal.SIGKILL)
            replacement = wait_for(
                lambda: worker_leaders(server, ep), 20, "a replacement",
                until=lambda w: len(w) == 1 and victim[0] not in w,
            )  # fmt: skip
            wait_all_done(http, ep, [job_id], 30)
            assert http.get(f"/{ep}/health").json()["jobs"]["retried"] == 1
        assert runs(log) == {job_id: 1}  # the killed run never finished; the rerun did, once
        assert worker_leaders(server, ep) == replacement
    finally:
        server.stop()


def test_idle_scale_down_never_cuts_a_running_job(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", **SERVER_ENV)
    try:
        ep, log = new_endpoint("down"), tmp_path / "runs.log"
        configure(
            server, ep, handler=RECORD, workersMax=2, idleTimeout=1,
            scalerType="REQUEST_COUNT", scalerValue=1,
        )  # fmt: skip
        with client(server) as http:
            long_id = submit(http, ep, {"seconds": 3.5, "log": str(log)})
            short_id = submit(http, ep, {"seconds": 0.1, "log": str(log)})
            wait_for(lambda: len(worker_leaders(server, ep)), 20, "two workers",
                     until=lambda n: n == 2)  # fmt: skip
            # the short job's worker goes idle and is drained while the long job runs
            wait_for(lambda: len(worker_leaders(server, ep)), 20, "one worker drained",
                     until=lambda n: n == 1)  # fmt: skip
            assert _status(http, ep, long_id)["status"] == "IN_PROGRESS"
            # lowering workersMax to 0 drains the last worker too: its job still finishes
            patched = http.patch(f"{server.url}/endpoints/{ep}", json={"workersMax": 0}, timeout=10)
            assert patched.status_code == 200, patched.text
            wait_for(lambda: worker_leaders(server, ep), 20, "zero workers", until=lambda w: not w)
            wait_all_done(http, ep, [long_id, short_id], 10)
            assert http.get(f"/{ep}/health").json()["jobs"]["retried"] == 0
        assert runs(log) == {long_id: 1, short_id: 1}
    finally:
        server.stop()


def test_server_killed_and_restarted_leaves_no_orphan_and_no_second_fleet(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "server", **SERVER_ENV)
    try:
        ep = new_endpoint("restart")
        configure(server, ep, handler=RECORD, workersMin=2, workersMax=2, idleTimeout=60)
        old = wait_for(lambda: worker_leaders(server, ep), 20, "two workers",
                       until=lambda w: len(w) == 2)  # fmt: skip
        server.kill()
        server.start()
        new = wait_for(
            lambda: worker_leaders(server, ep), 30, "the old fleet gone and a new one of two",
            until=lambda w: len(w) == 2 and not set(w) & set(old),
        )  # fmt: skip
        pidfiles = {p.stem for p in (server.data_dir / "scaler").glob("*.json")}
        assert pidfiles == set(new)
    finally:
        server.stop()
    assert worker_leaders(server, ep) == {}


def test_remote_scaler_scales_a_server_from_outside(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server", NEUROQ_SCALER="false", **SERVER_ENV)
    state = tmp_path / "scaler-host"
    cmd = [sys.executable, "-m", "neuroq", "scaler", "--url", server.url, "--key", server.api_key]
    cmd += ["--worker-key", server.worker_key, "--data-dir", str(state), "--interval", "0.1"]
    cmd += ["--ping-interval", "0.5"]
    scaler = spawn(cmd, tmp_path / "scaler.log", dict(os.environ))
    try:
        ep, log = new_endpoint("remote"), tmp_path / "runs.log"
        configure(server, ep, handler=RECORD, workersMax=2, idleTimeout=1)
        with client(server) as http:
            ids = [submit(http, ep, {"seconds": 0.1, "log": str(log)}) for _ in range(6)]
            wait_all_done(http, ep, ids, 60)
            ran_on = {_status(http, ep, job_id)["workerId"] for job_id in ids}
        assert runs(log) == dict.fromkeys(ids, 1)
        assert all(str(w).startswith(f"{ep}-") for w in ran_on), ran_on
        wait_for(lambda: worker_leaders(server, ep, state / "scaler"), 15, "scale to zero",
                 until=lambda w: not w)  # fmt: skip
    finally:
        end_group(scaler, grace_s=20)
        server.stop()
