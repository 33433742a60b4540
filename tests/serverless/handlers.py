"""Handlers the scaler tests start as workers: each run is recorded, so a test can tell a job
that ran once from one that ran twice."""

from __future__ import annotations

import asyncio
import os
from typing import Any


async def record(job: dict[str, Any]) -> dict[str, Any]:
    """Sleep `input.seconds`, then append "<job id> <pid>" to the file `input.log`."""
    params = job["input"] if isinstance(job.get("input"), dict) else {}
    await asyncio.sleep(float(params.get("seconds", 0.1)))
    log = params.get("log")
    if isinstance(log, str):
        with open(log, "a") as f:
            f.write(f"{job['id']} {os.getpid()}\n")
    return {"pid": os.getpid(), "n": params.get("n")}
