"""The scaler inside `neuroq serve`, with real worker processes on loopback: a burst of 200 jobs
scales an endpoint from zero to workersMax 4 and back to zero after the idle timeout with every
job run exactly once; workersMax holds under a flood; QUEUE_DELAY adds one worker at a time
while jobs wait; REQUEST_COUNT runs ceil(jobs / scalerValue) workers; `/health` shows starting
workers as initializing and the first job's delayTime includes the cold start; a workersSpare
worker is started while the endpoint is idle and takes the first job of a burst."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fleet import (
    RECORD,
    SERVER_ENV,
    Watch,
    client,
    configure,
    new_endpoint,
    runs,
    submit,
    wait_all_done,
    wait_for,
    worker_leaders,
)
from harness import ServerProcess, start_server


def _two(count: int) -> bool:
    return count == 2


def _one(count: int) -> bool:
    return count == 1


def _wait_one_ready(http: httpx.Client, ep: str) -> None:
    wait_for(
        lambda: http.get(f"/{ep}/health").json()["workers"],
        30,
        "one worker ready",
        until=lambda w: w["ready"] == 1 and w["initializing"] == 0,
    )


@pytest.fixture(scope="module")
def scaling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("scaling"), **SERVER_ENV)
    yield proc
    proc.stop()


def test_burst_scales_zero_to_max_and_back_to_zero_exactly_once(
    scaling_server: ServerProcess, tmp_path: Path
) -> None:
    ep, log = new_endpoint("burst"), tmp_path / "runs.log"
    configure(
        scaling_server, ep, handler=RECORD, workersMax=4, idleTimeout=1,
        scalerType="REQUEST_COUNT", scalerValue=1,
    )  # fmt: skip
    assert worker_leaders(scaling_server, ep) == {}
    watch = Watch(scaling_server, ep)
    with client(scaling_server) as http:
        ids = [submit(http, ep, {"seconds": 0.05, "log": str(log), "n": n}) for n in range(200)]
        wait_all_done(http, ep, ids, 90)
        first = http.get(f"/{ep}/status/{ids[0]}").json()
    wait_for(lambda: worker_leaders(scaling_server, ep), 15, "scale to zero", until=lambda w: not w)
    counts = watch.stop()
    assert watch.peak == 4, counts
    assert counts[-1] == 0
    assert runs(log) == dict.fromkeys(ids, 1)  # nothing lost, nothing run twice
    # the first job waited for a worker process to start and load its handler
    assert first["delayTime"] >= 200, first


def test_workers_max_holds_under_a_flood(scaling_server: ServerProcess, tmp_path: Path) -> None:
    ep = new_endpoint("flood")
    configure(
        scaling_server, ep, handler=RECORD, workersMax=2, idleTimeout=1,
        scalerType="QUEUE_DELAY", scalerValue=1,
    )  # fmt: skip
    watch = Watch(scaling_server, ep)
    with client(scaling_server) as http:
        ids = [submit(http, ep, {"seconds": 0.2}) for _ in range(30)]
        wait_for(lambda: len(worker_leaders(scaling_server, ep)), 20, "2 workers", until=_two)
        wait_all_done(http, ep, ids, 60)
    counts = watch.stop()
    assert watch.peak == 2, counts


def test_queue_delay_adds_one_worker_at_a_time(scaling_server: ServerProcess) -> None:
    ep = new_endpoint("delay")
    configure(
        scaling_server, ep, handler=RECORD, workersMax=3, idleTimeout=1,
        scalerType="QUEUE_DELAY", scalerValue=1,
    )  # fmt: skip
    watch = Watch(scaling_server, ep)
    with client(scaling_server) as http:
        ids = [submit(http, ep, {"seconds": 1.0}) for _ in range(9)]
        wait_all_done(http, ep, ids, 60)
    wait_for(lambda: worker_leaders(scaling_server, ep), 15, "scale to zero", until=lambda w: not w)
    counts = watch.stop()
    rising = counts[: counts.index(max(counts)) + 1]
    assert rising == list(range(len(rising))), counts  # 0, 1, 2, ...: one at a time
    assert max(counts) >= 2


def test_request_count_runs_jobs_over_scaler_value_workers(
    scaling_server: ServerProcess,
) -> None:
    ep = new_endpoint("count")
    configure(
        scaling_server, ep, handler=RECORD, workersMax=4, idleTimeout=1, concurrency=5,
        scalerType="REQUEST_COUNT", scalerValue=5,
    )  # fmt: skip
    watch = Watch(scaling_server, ep)
    with client(scaling_server) as http:
        ids = [submit(http, ep, {"seconds": 1.5}) for _ in range(10)]
        wait_for(lambda: len(worker_leaders(scaling_server, ep)), 20, "2 workers", until=_two)
        wait_all_done(http, ep, ids, 60)
    counts = watch.stop()
    assert watch.peak == 2, counts  # ceil(10 / 5)


def test_health_shows_a_starting_worker_as_initializing(scaling_server: ServerProcess) -> None:
    ep = new_endpoint("init")
    configure(scaling_server, ep, handler=RECORD, workersMin=1, idleTimeout=1)
    with client(scaling_server) as http:
        seen = wait_for(
            lambda: http.get(f"/{ep}/health").json()["workers"],
            20,
            "an initializing worker",
            interval_s=0.01,
            until=lambda w: w["initializing"] == 1,
        )
        assert seen["ready"] == 0
        _wait_one_ready(http, ep)
    reply = configure(scaling_server, ep, handler=RECORD, workersMin=0, idleTimeout=1)
    assert reply["workersMin"] == 0
    wait_for(lambda: worker_leaders(scaling_server, ep), 15, "scale to zero", until=lambda w: not w)


def test_a_spare_worker_waits_idle_and_takes_the_first_job_of_a_burst(
    scaling_server: ServerProcess,
) -> None:
    ep = new_endpoint("spare")
    spare_rule = {"workersMax": 3, "workersSpare": 1, "scalerType": "REQUEST_COUNT"}
    # watched from before the settings exist: the scaler starts the spare as soon as they do
    watch = Watch(scaling_server, ep)
    configure(scaling_server, ep, handler=RECORD, idleTimeout=1, scalerValue=1, **spare_rule)
    with client(scaling_server) as http:
        _wait_one_ready(http, ep)  # with nothing queued
        assert http.get(f"/{ep}/health").json()["jobs"]["inQueue"] == 0
        (spare,) = worker_leaders(scaling_server, ep)
        burst = [submit(http, ep, {"seconds": 0.5}) for _ in range(6)]
        wait_all_done(http, ep, burst, 60)
        # the spare, ready before the burst, ran its first job: no cold start in its delayTime
        first = http.get(f"/{ep}/status/{burst[0]}").json()
        assert first["workerId"] == spare, first
        # after the idle timeout the fleet falls back to the spare alone, not to zero
        wait_for(lambda: len(worker_leaders(scaling_server, ep)), 20, "one spare left", until=_one)
        patched = http.patch(f"{scaling_server.url}/endpoints/{ep}", json={"workersSpare": 0})
        assert patched.json()["workersSpare"] == 0
    wait_for(lambda: worker_leaders(scaling_server, ep), 15, "scale to zero", until=lambda w: not w)
    counts = watch.stop()
    assert counts[:2] == [0, 1] and max(counts) >= 2 and 1 in counts[counts.index(max(counts)) :]
    assert counts[-1] == 0, counts
