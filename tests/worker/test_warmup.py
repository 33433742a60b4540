"""The warm-up hook with real server and worker processes: the worker is `initializing` and
takes nothing until the hook returns; a hook that raises ends the worker with one error line."""

from __future__ import annotations

import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess, start_worker, status, submit, wait_for

from neuroq.jobs import JobStatus

HANDLERS = """
import asyncio
import os
from pathlib import Path

STATE = {"warm": None}


def warmup():
    # Blocks until the test creates the gate file: a model load that takes a while.
    gate = Path(os.environ["WARM_GATE"])
    while not gate.exists():
        import time
        time.sleep(0.05)
    STATE["warm"] = "module hook"


async def prepare():
    await asyncio.sleep(0)
    STATE["warm"] = "flag hook"


def broken():
    raise RuntimeError("no weights in /models/a")


def handler(job):
    return {"warm": STATE["warm"]}
"""

NO_HOOK = """
def handler(job):
    return "plain"
"""


def _write(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def client(shared_server: ServerProcess) -> Iterator[httpx.Client]:
    with shared_server.client() as http:
        yield http


def _workers(client: httpx.Client, ep: str) -> dict[str, int]:
    reply = client.get(f"/{ep}/health")
    assert reply.status_code == 200, reply.text
    workers: dict[str, int] = reply.json()["workers"]
    return workers


def test_module_warmup_holds_the_worker_initializing_until_it_returns(
    shared_server: ServerProcess, client: httpx.Client, ep: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    handler = _write(tmp_path, "warm_handler.py", HANDLERS)
    worker = start_worker(shared_server, f"{handler}:handler", ep, tmp_path, WARM_GATE=str(gate))
    try:
        wait_for(
            lambda: _workers(client, ep),
            30,
            "the worker to register as initializing",
            until=lambda w: w["initializing"] == 1,
        )
        job_id = submit(client, ep, {})
        # Warming: the job stays queued and the worker stays initializing.
        wait_for(lambda: "warm-up" in worker.log(), 10, "the warm-up log line")
        assert status(client, ep, job_id)["status"] == JobStatus.IN_QUEUE.value
        workers = _workers(client, ep)
        assert workers["initializing"] == 1 and workers["ready"] == 0, workers
        gate.touch()
        final = wait_for(
            lambda: status(client, ep, job_id),
            30,
            "the job to complete",
            until=lambda s: s["status"] == JobStatus.COMPLETED.value,
        )
        assert final["output"] == {"warm": "module hook"}
        assert _workers(client, ep)["initializing"] == 0
        assert "done in" in worker.log()
    finally:
        worker.stop()
    assert worker.proc.returncode == 0, worker.log()


def test_warmup_flag_runs_in_the_handlers_own_module(
    shared_server: ServerProcess, client: httpx.Client, ep: str, tmp_path: Path
) -> None:
    handler = _write(tmp_path, "flag_handler.py", HANDLERS)
    worker = start_worker(
        shared_server, f"{handler}:handler", ep, tmp_path, "--warmup", f"{handler}:prepare"
    )
    try:
        job_id = submit(client, ep, {})
        final = wait_for(
            lambda: status(client, ep, job_id),
            30,
            "the job to complete",
            until=lambda s: s["status"] == JobStatus.COMPLETED.value,
        )
        # The flag replaced the module's blocking `warmup`; what it set is what the handler saw.
        assert final["output"] == {"warm": "flag hook"}
    finally:
        worker.stop()


def test_a_failing_warmup_exits_3_with_one_error_line(
    shared_server: ServerProcess, ep: str, tmp_path: Path
) -> None:
    handler = _write(tmp_path, "broken_handler.py", HANDLERS)
    worker = start_worker(
        shared_server, f"{handler}:handler", ep, tmp_path, "--warmup", f"{handler}:broken"
    )
    try:
        assert worker.proc.wait(30) == 3, worker.log()
    finally:
        worker.stop()
    errors = [line for line in worker.log().splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, worker.log()
    assert errors[0].endswith("RuntimeError: no weights in /models/a"), errors
    assert f"warm-up {handler}:broken failed after" in errors[0]
    assert "Traceback" not in worker.log()


def test_a_warmup_that_cannot_be_loaded_is_a_usage_error(
    shared_server: ServerProcess, ep: str, tmp_path: Path
) -> None:
    handler = _write(tmp_path, "plain_handler.py", NO_HOOK)
    worker = start_worker(
        shared_server, f"{handler}:handler", ep, tmp_path, "--warmup", f"{handler}:nope"
    )
    try:
        assert worker.proc.wait(30) == 2, worker.log()
    finally:
        worker.stop()
    assert "--warmup" in worker.log() and "has no attribute 'nope'" in worker.log()


def test_sigterm_during_a_warmup_ends_the_worker_cleanly(
    shared_server: ServerProcess, ep: str, tmp_path: Path
) -> None:
    handler = _write(tmp_path, "slow_handler.py", HANDLERS)
    # The gate never opens: only the signal ends the warm-up.
    worker = start_worker(
        shared_server, f"{handler}:handler", ep, tmp_path, WARM_GATE=str(tmp_path / "never")
    )
    try:
        wait_for(lambda: "warm-up" in worker.log(), 30, "the warm-up to start")
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(15) == 0, worker.log()
    finally:
        worker.stop()
    assert "stopped during warm-up" in worker.log()


def test_only_a_function_defined_in_the_handlers_module_is_its_hook(tmp_path: Path) -> None:
    from neuroq.worker.handlers import load_handler, module_warmup

    own = _write(tmp_path, "own_hook.py", HANDLERS)
    hook = module_warmup(load_handler(f"{own}:handler"))
    assert hook is not None and hook.ref == f"{own}:warmup" and not hook.is_async
    imported = _write(
        tmp_path, "imported_hook.py", "from own_hook import warmup\n\ndef handler(job):\n    pass\n"
    )
    assert module_warmup(load_handler(f"{imported}:handler")) is None
    assert module_warmup(load_handler(f"{_write(tmp_path, 'none.py', NO_HOOK)}:handler")) is None
