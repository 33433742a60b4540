"""The NeuroQ job handler: `neuroq worker neuroq.handler:handler` or `python -m neuroq.handler`.

`handler` is a coroutine function, not a generator, on purpose: its final output is the result
object (`output["generated"]` is the whole reply) under our worker and the RunPod SDK alike, and
`generate` streams its pieces to /stream on the side (see streaming.py). docs/handler.md lists
the actions, parameters, defaults, outputs and errors.

`make_generator_handler` builds the other form, for endpoints that serve OpenAI clients on hosted
RunPod, whose OpenAI route expects a generator with `return_aggregate_stream` like worker-vllm:
OpenAI requests yield worker-vllm's values (openai.py), any other action yields its result once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from neuroq.config import HandlerSettings
from neuroq.handler.actions import Service
from neuroq.handler.openai import openai_values
from neuroq.handler.openai_requests import is_openai_input
from neuroq.handler.runtime import RunPodRuntime, Runtime, WorkerRuntime
from neuroq.worker.handlers import AGGREGATE_ATTR

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | list[Any]]]
GeneratorHandler = Callable[[dict[str, Any]], AsyncIterator[Any]]


def _service(
    runtime: Runtime, settings: HandlerSettings | None
) -> Callable[[], Awaitable[Service]]:
    """The Service of a handler, built on its first job (the environment is read then, so
    importing this module stays cheap) and shared by all later ones."""
    service: Service | None = None
    lock = asyncio.Lock()

    async def get() -> Service:
        nonlocal service
        if service is None:
            async with lock:
                if service is None:
                    service = await asyncio.to_thread(Service.from_env, runtime, settings)
        return service

    return get


def make_handler(runtime: Runtime, settings: HandlerSettings | None = None) -> Handler:
    """A handler whose jobs report to `runtime`."""
    return _handler_of(_service(runtime, settings))


def _handler_of(service: Callable[[], Awaitable[Service]]) -> Handler:
    async def handler(job: dict[str, Any]) -> dict[str, Any] | list[Any]:
        """Run one job; expected failures return {"error": ...} (a FAILED job naming the field)."""
        return await (await service()).handle(job)

    return handler


def make_generator_handler(
    runtime: Runtime, settings: HandlerSettings | None = None
) -> GeneratorHandler:
    """The generator form (module docstring); its final output is the list of what it yielded
    under both runtimes (`return_aggregate_stream` is set on it for our worker)."""
    service = _service(runtime, settings)

    async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
        raw = job.get("input") if isinstance(job, dict) else None
        if is_openai_input(raw):
            async for value in openai_values(await service(), job, raw):
                yield value
        else:
            # A dict with "error" ends the job FAILED with it, as a returned one would.
            yield await (await service()).handle(job)

    setattr(handler, AGGREGATE_ATTR, True)
    return handler


_worker_service = _service(WorkerRuntime(), None)
#: the handler `neuroq worker neuroq.handler:handler` runs
handler = _handler_of(_worker_service)


async def warmup() -> None:
    """Run by `neuroq worker` before its first take (the worker shows as initializing until it
    returns): reads the settings and loads the default model, so the first job does not pay for
    either. A worker of the generator form loads its own service on its first job."""
    service = await _worker_service()
    await asyncio.to_thread(service.models.engine, "default")


#: the generator form for our worker: `neuroq worker neuroq.handler:generator_handler`
generator_handler = make_generator_handler(WorkerRuntime())

__all__ = [
    "RunPodRuntime",
    "Service",
    "WorkerRuntime",
    "generator_handler",
    "handler",
    "make_generator_handler",
    "make_handler",
    "warmup",
]
