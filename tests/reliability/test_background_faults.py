"""The background loop under a store that refuses writes for a while (disk full, database
unreachable): it keeps going, says so once when the trouble starts and once when it passes,
instead of a traceback twice a second for as long as it lasts."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from neuroq.api.background import _every
from neuroq.store.errors import StoreUnavailable


async def test_an_unavailable_store_is_reported_once_and_its_recovery_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[BaseException | None] = [
        *[StoreUnavailable("the job store is out of disk space; retry later")] * 5,
        None,
        None,
    ]
    done = asyncio.Event()
    calls = 0

    async def step() -> None:
        nonlocal calls
        outcome = outcomes[min(calls, len(outcomes) - 1)]
        calls += 1
        if calls == len(outcomes):
            done.set()
        if outcome is not None:
            raise outcome

    caplog.set_level(logging.INFO, logger="neuroq.background")
    loop = asyncio.create_task(_every(0.001, "sweep", step))
    await asyncio.wait_for(done.wait(), 5)
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "sweep paused: the job store is out of disk space; retry later; trying again every 0.0 s",
        "sweep resumed: the job store is available again",
    ]
    assert all(r.exc_info is None for r in caplog.records)
