"""The overview's serverless endpoints: settings (workersSpare among them) beside workers now and
desired, fetched over HTTP after signing in, every configured string escaped."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dashstack import sign_in
from harness import ServerProcess, start_server, start_worker, submit, wait_for

from neuroq.api.dashboard import render
from neuroq.endpoints import EndpointConfig, ScalerType

HOSTILE = '<script>alert("x")</script>&/h.py:handler'

WARM_HANDLER = """
import os
import time
from pathlib import Path


def warmup():
    while not Path(os.environ["WARM_GATE"]).exists():
        time.sleep(0.05)


def handler(job):
    return job["input"]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("dash-endpoints"))
    yield proc
    proc.stop()


def _configure(server: ServerProcess, ep: str, **settings: object) -> None:
    reply = httpx.put(f"{server.url}/endpoints/{ep}", json=settings, headers=server.client_headers)
    assert reply.status_code in (200, 201), reply.text


def _row(page: str, ep: str) -> str:
    match = re.search(rf'<tr data-endpoint="{ep}">(.*?)</tr>', page.split('id="configured"')[1])
    assert match is not None, f"no configured row for {ep}"
    return match.group(1)


def _cell(row: str, col: str) -> str:
    match = re.search(rf'data-col="{col}">(.*?)</td>', row)
    assert match is not None, f"no {col} cell in {row}"
    return match.group(1)


def test_overview_lists_configured_endpoints_with_workers_now_and_desired(
    server: ServerProcess, tmp_path: Path
) -> None:
    # No jobs and workersMin 0: the scaler starts nothing for the hostile handler string.
    _configure(server, "dash-cfg-hostile", handler=HOSTILE, workersMax=2, idleTimeout=9)
    # No handler either: its spare is a setting shown, not a worker started.
    _configure(server, "dash-cfg-spare", workersMax=3, workersSpare=2)
    # No handler: the scaler leaves it alone; a worker of our own is warming up on it.
    _configure(
        server,
        "dash-cfg-queue",
        workersMin=0,
        workersMax=5,
        scalerType="REQUEST_COUNT",
        scalerValue=2,
        concurrency=3,
        executionTimeout=90_000,
    )
    handler = tmp_path / "warm.py"
    handler.write_text(WARM_HANDLER)
    gate = tmp_path / "gate"
    worker = start_worker(
        server, f"{handler}:handler", "dash-cfg-queue", tmp_path, WARM_GATE=str(gate)
    )
    try:
        with server.client() as client:
            for n in range(3):
                submit(client, "dash-cfg-queue", {"n": n})
        with sign_in(server) as ui:

            def queue_row() -> str:
                return _row(ui.get("/").text, "dash-cfg-queue")

            row = wait_for(queue_row, 30, "the warming worker", until=lambda r: "1 starting" in r)
            assert _cell(row, "min-max") == "0–5"
            assert _cell(row, "spare") == "0"
            assert _cell(row, "rule") == "1 worker per 2 jobs"
            assert _cell(row, "concurrency") == "3"
            assert "1.5 min" in row  # the executionTimeout default
            assert _cell(row, "workers-now").startswith("1<small>")
            assert _cell(row, "workers-desired") == "2"  # ceil(3 queued / 2)
            assert "none (a plain queue)" in row

            page = ui.get("/").text
            hostile = _row(page, "dash-cfg-hostile")
            assert "<script>" not in page
            assert html.escape(HOSTILE, quote=True) in hostile
            assert _cell(hostile, "idle") == "9 s"
            assert _cell(_row(page, "dash-cfg-spare"), "spare") == "2"
            assert _cell(hostile, "rule") == "+1 worker while a job waits over 4 s"
            assert _cell(hostile, "workers-now") == "0"
            assert _cell(hostile, "workers-desired") == "0"

            # The live fragment carries the same part.
            live = ui.get("/ui/live/overview").json()["parts"]["configured"]
            assert "dash-cfg-queue" in live and "<script>" not in live

            gate.touch()
            done = wait_for(
                queue_row,
                30,
                "the queue to be served",
                until=lambda r: _cell(r, "workers-desired") == "0",
            )
            assert _cell(done, "workers-now") == "1"
    finally:
        worker.stop()


def test_a_command_shows_only_its_program() -> None:
    config = EndpointConfig(
        "sdk",
        command=("python", "rp_handler.py", "--api-key", "s3cr3t"),
        scaler_type=ScalerType.QUEUE_DELAY,
    )
    table = render.configured_endpoints([config], {}, [])
    assert "<code>python</code>" in table and "s3cr3t" not in table
    assert "No endpoint is configured" in render.configured_endpoints([], {}, [])
