"""A job-take reply that lands just as SIGTERM does. The server has leased those jobs to the
worker and shows them IN_PROGRESS; dropping them would leave them stranded until the server
finds the worker lost. The worker runs them within its grace period like any in-flight job,
and a second signal abandons them like the rest."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest


def _signal_as_a_take_reply_lands(fake: Any) -> list[Any]:
    """Make the fake server request shutdown of the worker put in the returned list while a
    take reply that leases jobs is still being read."""
    answer = fake.handle
    workers: list[Any] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        reply: httpx.Response = await answer(request)
        if "/job-take" in request.url.path and reply.status_code == 200:
            workers[0].request_shutdown()
            await asyncio.sleep(0)
        return reply

    fake.handle = handle
    return workers


@pytest.mark.timeout(20)
async def test_job_taken_as_shutdown_begins_is_run_within_the_grace_period(
    fake: Any, make_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    workers = _signal_as_a_take_reply_lands(fake)
    worker = make_worker(lambda job: ran.append(job["id"]) or "done", burst=False)
    workers.append(worker)
    fake.add("j1")
    with caplog.at_level(logging.INFO, logger="neuroq.worker"):
        await asyncio.wait_for(worker.run(), 10)
    assert fake.queue == []  # the server handed it out
    assert ran == ["j1"] and len(fake.finals("j1")) == 1  # run once, its result posted
    assert worker.counts == {"completed": 1, "failed": 0, "stopped": 0, "abandoned": 0}
    assert any("j1" in r.getMessage() and "shutdown" in r.getMessage() for r in caplog.records)
    assert "1 completed, 0 failed, 0 stopped, 0 abandoned" in caplog.text


@pytest.mark.timeout(20)
async def test_a_second_signal_abandons_a_job_taken_as_shutdown_began(
    fake: Any, make_worker: Any
) -> None:
    started = asyncio.Event()
    workers = _signal_as_a_take_reply_lands(fake)

    async def forever(job: dict[str, Any]) -> Any:
        started.set()
        await asyncio.sleep(3600)

    worker = make_worker(forever, burst=False, grace_s=3600)
    workers.append(worker)
    fake.add("j1")
    run = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 5)
    worker.request_shutdown()  # the second signal: no grace left for anyone
    await asyncio.wait_for(run, 10)
    assert fake.finals("j1") == []
    assert worker.counts == {"completed": 0, "failed": 0, "stopped": 0, "abandoned": 1}
