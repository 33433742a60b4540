"""An unmodified-SDK worker with an async generator and no aggregation: the final result is [],
the chunks exist only on /stream (spec 2.11)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
    for i in range(job["input"]["count"]):
        await asyncio.sleep(job["input"].get("gap", 0.3))
        yield f"piece-{i}"


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
