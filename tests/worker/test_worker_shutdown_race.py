"""A job-take reply that lands just as SIGTERM does. The server has leased those jobs to the
worker, so dropping the reply silently would leave them unaccounted for until their lease runs
out: the worker must count each one as abandoned in its summary and log its id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest


@pytest.mark.timeout(20)
async def test_job_taken_as_shutdown_begins_is_counted_and_logged(
    fake: Any, make_worker: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    answer = fake.handle
    workers: list[Any] = []

    async def handle(request: httpx.Request) -> httpx.Response:
        reply: httpx.Response = await answer(request)
        if "/job-take" in request.url.path and reply.status_code == 200:
            # j1 is leased to the worker; SIGTERM arrives while the reply is still being read.
            workers[0].request_shutdown()
            await asyncio.sleep(0)
        return reply

    fake.handle = handle
    worker = make_worker(lambda job: ran.append(job["id"]) or "done", burst=False)
    workers.append(worker)
    fake.add("j1")
    with caplog.at_level(logging.INFO, logger="neuroq.worker"):
        await asyncio.wait_for(worker.run(), 10)
    assert fake.queue == []  # the server handed it out
    assert ran == [] and fake.finals("j1") == []  # not started after the shutdown request
    assert worker.counts == {"completed": 0, "failed": 0, "stopped": 0, "abandoned": 1}
    assert any("j1" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "0 completed, 0 failed, 0 stopped, 1 abandoned" in caplog.text
