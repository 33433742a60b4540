"""The overview's plots: per endpoint throughput and latency with axes, read from the store, so
they are still there after the server restarts."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from dashstack import sign_in, start_server

from neuroq.api.dashboard import charts, render
from neuroq.store.base import FinishedMinute

NOW = 1_700_000_000_000
HOUR = 3_600_000


def minute(endpoint: str, ago_min: int, finished: int, completed: int) -> FinishedMinute:
    return FinishedMinute(
        endpoint_id=endpoint,
        at_ms=NOW - ago_min * 60_000,
        finished=finished,
        completed=completed,
        mean_execution_ms=1500.0,
        max_execution_ms=2000,
        mean_delay_ms=20.0,
        max_delay_ms=30,
    )


def test_each_endpoint_gets_throughput_and_latency_plots_with_axes() -> None:
    shown = render.plots(
        [minute("ep-a", 10, 7, 5), minute("ep-a", 3, 2, 2), minute("ep-b", 30, 1, 0)],
        [(NOW - 60_000, 3.0), (NOW, 1.0)],
        NOW,
    )
    sections = re.findall(r'<section class="endpoint-plots" data-endpoint="([^"]+)">', shown)
    assert sections == ["ep-a", "ep-b"]
    assert shown.count("<figcaption>Throughput, jobs/min") == 2
    assert shown.count("<figcaption>Latency") == 2
    assert "Queue depth" in shown
    # value axis: 0, half and a round top above the largest stack (7 jobs -> 10)
    assert '<text x="42" y="' in shown and ">10</text>" in shown and ">5</text>" in shown
    # time axis: five clock times from an hour ago to now, in UTC
    assert ">21:13</text>" in shown and ">22:13</text>" in shown
    # one bar per status group per minute, each with its tooltip
    assert "5 completed</title>" in shown and "2 failed, cancelled or timed out</title>" in shown
    assert "mean execution 1.50 s</title>" in shown


def test_no_finished_job_says_so() -> None:
    shown = render.plots([], [], NOW)
    assert "No job finished in the last hour" in shown


def test_labels_are_escaped() -> None:
    evil = '<script>alert("x")</script>'
    shown = charts.line_chart(
        evil, [charts.Series(evil, "s-ok", [(NOW, 1.0)])], start_ms=NOW - HOUR, end_ms=NOW, fmt=str
    )
    assert "<script" not in shown and "&lt;script&gt;" in shown


def test_round_tops() -> None:
    assert [charts.nice_top(v) for v in (0, 0.3, 1, 7, 12, 4500)] == [1, 0.5, 1, 10, 20, 5000]


def test_plots_survive_a_restart(tmp_path: Path) -> None:
    """Jobs run through the worker protocol, the server restarts, and the overview still plots
    them: they are read from the database, not from the process's memory."""
    server = start_server(tmp_path / "srv")
    try:
        with server.client() as client:
            for _ in range(3):
                client.post("/dp-restart/run", json={"input": {}}).raise_for_status()
        worker = httpx.Client(base_url=server.base_url, headers=server.worker_headers, timeout=30)
        with worker:
            for _ in range(3):
                job = worker.get("/dp-restart/job-take/w-1").json()
                done = worker.post(f"/dp-restart/job-done/w-1/{job['id']}", json={"output": 1})
                done.raise_for_status()
        server.stop()
        server.start()
        with sign_in(server) as ui:
            overview = ui.get("/").text
    finally:
        server.stop()
    assert '<section class="endpoint-plots" data-endpoint="dp-restart">' in overview
    assert ": 3 completed</title>" in overview
