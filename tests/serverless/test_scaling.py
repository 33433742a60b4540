"""The scaler inside `neuroq serve`, with real worker processes on loopback: a burst scales an
endpoint from zero to workersMax and back to zero after the idle timeout with every job run
exactly once; workersMax holds under a flood; QUEUE_DELAY adds one worker at a time while jobs
wait; REQUEST_COUNT runs ceil(jobs / scalerValue) workers; `/health` shows starting workers as
initializing and the first job's delayTime includes the cold start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
        ids = [submit(http, ep, {"seconds": 0.1, "log": str(log), "n": n}) for n in range(40)]
        wait_all_done(http, ep, ids, 60)
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
        wait_for(
            lambda: http.get(f"/{ep}/health").json()["workers"],
            20,
            "the worker ready",
            until=lambda w: w["ready"] == 1 and w["initializing"] == 0,
        )
    reply = configure(scaling_server, ep, handler=RECORD, workersMin=0, idleTimeout=1)
    assert reply["workersMin"] == 0
    wait_for(lambda: worker_leaders(scaling_server, ep), 15, "scale to zero", until=lambda w: not w)
