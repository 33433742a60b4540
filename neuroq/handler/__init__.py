"""The NeuroQ job handler: `neuroq worker neuroq.handler:handler` or `python -m neuroq.handler`.

`handler` is a coroutine function, not a generator, on purpose: its final output is the result
object (`output["generated"]` is the whole reply) under our worker and the RunPod SDK alike, and
`generate` streams its pieces to /stream on the side (see streaming.py). docs/handler.md lists
the actions, parameters, defaults, outputs and errors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from neuroq.config import HandlerSettings
from neuroq.handler.actions import Service
from neuroq.handler.runtime import RunPodRuntime, Runtime, WorkerRuntime

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def make_handler(runtime: Runtime, settings: HandlerSettings | None = None) -> Handler:
    """A handler whose jobs report to `runtime`, sharing one Service built on the first job
    (the environment is read then, so importing this module stays cheap)."""
    service: Service | None = None
    lock = asyncio.Lock()

    async def handler(job: dict[str, Any]) -> dict[str, Any]:
        """Run one job; expected failures return {"error": ...} (a FAILED job naming the field)."""
        nonlocal service
        if service is None:
            async with lock:
                if service is None:
                    service = await asyncio.to_thread(Service.from_env, runtime, settings)
        return await service.handle(job)

    return handler


#: the handler `neuroq worker neuroq.handler:handler` runs
handler = make_handler(WorkerRuntime())

__all__ = ["RunPodRuntime", "Service", "WorkerRuntime", "handler", "make_handler"]
