"""Streaming a reply's pieces from a handler that is *not* a generator.

Why not a generator: both our worker and the RunPod SDK make a generator's final output the list
of its chunks (`return_aggregate_stream`) or `[]`, never a dict, so `output["generated"]` -
what every existing client reads - would break. The handler is therefore an ordinary coroutine
that returns the result object, and posts its stream chunks itself, through its runtime
(runtime.py), to the same job-stream route a generator's chunks go to.

Pieces are coalesced: a post per token costs the decoding thread more (GIL, HTTP) than it gains
in latency once several jobs stream at once. They always concatenate to the reply, and every
piece is posted before the final result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from neuroq.handler.runtime import ChunkPoster, Runtime

log = logging.getLogger("neuroq.handler")

#: least time between two stream posts of one job
STREAM_INTERVAL_S = 0.05


@asynccontextmanager
async def piece_stream(
    runtime: Runtime, job: dict[str, Any]
) -> AsyncIterator[Callable[[str], None]]:
    """A callback (event loop only) for the pieces of one job's reply, posted in the
    background; when the block ends, every piece it was given has been posted (or lost)."""
    async with runtime.stream(job) as post:
        pieces: asyncio.Queue[str | None] = asyncio.Queue()
        pump = asyncio.create_task(_pump(pieces, post, job.get("id")))
        try:
            yield pieces.put_nowait
        finally:
            pieces.put_nowait(None)
            await pump


async def _pump(pieces: asyncio.Queue[str | None], post: ChunkPoster, job_id: Any) -> None:
    """Post pieces as they come, at most one post per STREAM_INTERVAL_S; whatever piled up
    meanwhile goes out as one chunk, so the chunks still concatenate to the reply."""
    loop = asyncio.get_running_loop()
    done = False
    last_post = 0.0
    while not done:
        batch: list[str] = []
        item = await pieces.get()
        pause = last_post + STREAM_INTERVAL_S - loop.time()
        if pause > 0 and item is not None:
            await asyncio.sleep(pause)
        while True:
            if item is None:
                done = True
                break
            batch.append(item)
            if pieces.empty():
                break
            item = pieces.get_nowait()
        if batch:
            last_post = loop.time()
            try:
                await post("".join(batch))
            except Exception as exc:  # a lost chunk must never fail the job: the result has all
                log.warning("job %s: stream chunk lost: %s", job_id, exc)
