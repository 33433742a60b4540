"""Small handlers for tests, docs and benchmarks: one of each kind the worker runtime drives,
e.g. `neuroq worker neuroq.demo_handlers:echo --endpoint demo`."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from neuroq.worker import handler, progress_update


def _input(job: dict[str, Any]) -> dict[str, Any]:
    value = job.get("input")
    return value if isinstance(value, dict) else {}


def echo(job: dict[str, Any]) -> Any:
    """Return the input unchanged (sync)."""
    return job["input"]


def noop(job: dict[str, Any]) -> dict[str, Any]:
    """Return {"ok": true}: the cheapest possible job, for overhead benchmarks."""
    return {"ok": True}


async def sleep(job: dict[str, Any]) -> dict[str, Any]:
    """Sleep `input.seconds` (async, so cancellable). If `input.marker` names a file, write
    "cancelled" there when the job is stopped, so tests can see the handler really ended."""
    params = _input(job)
    seconds = float(params.get("seconds", 1.0))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        marker = params.get("marker")
        if isinstance(marker, str):
            Path(marker).write_text("cancelled")
        raise
    return {"slept": seconds, "pid": os.getpid()}


def sleep_sync(job: dict[str, Any]) -> dict[str, Any]:
    """Sleep `input.seconds` in a plain function (runs in a thread; cannot be interrupted)."""
    seconds = float(_input(job).get("seconds", 1.0))
    time.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}


def fail(job: dict[str, Any]) -> None:
    """Raise RuntimeError with `input.message`."""
    raise RuntimeError(str(_input(job).get("message", "demo failure")))


@handler(aggregate=True)
async def stream(job: dict[str, Any]) -> AsyncIterator[dict[str, int]]:
    """Yield `input.count` chunks {"i": n} (async generator; final output = all chunks).
    `input.delay` seconds pass between chunks."""
    params = _input(job)
    delay = float(params.get("delay", 0.0))
    for i in range(int(params.get("count", 3))):
        if delay:
            await asyncio.sleep(delay)
        yield {"i": i}


def stream_sync(job: dict[str, Any]) -> Iterator[str]:
    """Yield the words of `input.text` one by one (sync generator; final output = [])."""
    yield from str(_input(job).get("text", "hello streaming world")).split()


async def progress(job: dict[str, Any]) -> dict[str, Any]:
    """Report progress twice, `input.seconds` apart (default 1), then return {"done": true}."""
    seconds = float(_input(job).get("seconds", 1.0))
    progress_update(job, {"step": 1})
    await asyncio.sleep(seconds)
    progress_update(job, {"step": 2})
    await asyncio.sleep(seconds)
    return {"done": True}
