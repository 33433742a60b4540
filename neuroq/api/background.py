"""The server's background work: time-based job transitions and webhook delivery.

`run_background` runs for the server's whole life as one task, which the app cancels at shutdown.
Every change it makes goes through the store, whose operations are atomic, so several server
processes sharing one database can each run it. An iteration that fails (a database hiccup, a bug
in one delivery) is logged and the loop carries on: a dead sweeper would leave jobs IN_PROGRESS
forever with no error anywhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette

from neuroq.api.webhooks import WebhookSender
from neuroq.config import Settings
from neuroq.jobs import now_ms
from neuroq.store.base import JobStore, SweepResult
from neuroq.store.errors import StoreUnavailable

log = logging.getLogger("neuroq.background")


async def run_background(app: Starlette) -> None:
    settings: Settings = app.state.settings
    store: JobStore = app.state.store
    sender = WebhookSender(store, settings)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(
                _every(settings.sweep_interval_s, "sweep", lambda: sweep_once(store, settings))
            )
            group.create_task(_every(settings.sweep_interval_s, "webhook", sender.run_once))
    finally:
        await sender.aclose()


async def _every(interval_s: float, name: str, step: Callable[[], Awaitable[object]]) -> None:
    """Run `step` every `interval_s` until cancelled. A store that is unavailable (disk full,
    unreachable) is said once when it starts and once when it passes, not with a traceback
    twice a second for as long as it lasts."""
    unavailable = False
    while True:
        try:
            await step()
        except StoreUnavailable as exc:
            if not unavailable:
                log.warning("%s paused: %s; trying again every %.1f s", name, exc, interval_s)
            unavailable = True
        except Exception:
            log.exception("%s iteration failed; trying again in %.1f s", name, interval_s)
        else:
            if unavailable:
                log.warning("%s resumed: the job store is available again", name)
            unavailable = False
        await asyncio.sleep(interval_s)


async def sweep_once(store: JobStore, settings: Settings) -> SweepResult:
    """Apply the transitions due now and log each one (ids only: never inputs, outputs or keys)."""
    result = await store.sweep(
        now_ms(),
        worker_lost_ms=int(settings.worker_lost_s * 1000),
        max_retries=settings.max_retries,
    )
    for job_id in result.timed_out:
        log.info("job %s TIMED_OUT (executionTimeout or ttl)", job_id)
    for job_id in result.requeued:
        log.info("job %s requeued: its worker stopped renewing the lease", job_id)
    for job_id in result.failed_lost:
        log.info("job %s FAILED: worker lost and max_retries=%d used", job_id, settings.max_retries)
    for worker_id in result.workers_lost:
        log.info("worker %s lost: no contact for %.1f s", worker_id, settings.worker_lost_s)
    if result.deleted:
        log.info("deleted %d finished job(s) past their retention", result.deleted)
    return result
