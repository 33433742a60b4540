"""The NeuroQ job handler: `neuroq worker neuroq.handler:handler` or `python -m neuroq.handler`.

`handler` is a coroutine function, not a generator, on purpose: its final output is the result
object (`output["generated"]` is the whole reply) under our worker and the RunPod SDK alike, and
`generate` streams its pieces to /stream on the side (see streaming.py). docs/handler.md lists
the actions, parameters, defaults, outputs and errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from neuroq.handler.actions import Service

_service: Service | None = None
_service_lock = asyncio.Lock()


async def get_service() -> Service:
    """The process's one Service, built on first use (reads NEUROQ_DATA_DIR then)."""
    global _service
    if _service is None:
        async with _service_lock:
            if _service is None:
                _service = await asyncio.to_thread(Service.from_env)
    return _service


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job; expected failures return {"error": ...} (a FAILED job naming the field)."""
    service = await get_service()
    return await service.handle(job)


__all__ = ["Service", "handler"]
