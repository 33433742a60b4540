"""Where a running job's progress and stream chunks go: one adapter per runtime.

The handler returns its result object rather than yielding (streaming.py says why), so it hands
its progress and stream chunks to the runtime that runs it:

- `WorkerRuntime`, for `neuroq worker` (the default): `neuroq.worker.progress_update` and
  `stream_update`, which send in order, retry, and drop chunks once the job is stopped. A job
  the worker is not running (a direct call from a test or a script) sends nothing.
- `RunPodRuntime`, for RunPod's official SDK (`python -m neuroq.handler`): the SDK's own
  `progress_update`, and its own poster of a generator's chunks, so ours reach
  RUNPOD_WEBHOOK_POST_STREAM with the worker key exactly as a generator's would.

Tests pass their own `Runtime` to `Service` to see what a job sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

from neuroq.worker import progress_update, stream_update

#: posts one stream chunk of a job; returns once the post is done, so chunks stay in order
ChunkPoster = Callable[[Any], Awaitable[None]]


class Runtime(Protocol):
    def report_progress(self, job: dict[str, Any], data: dict[str, Any]) -> None:
        """Show `data` as the job's output in /status while it runs. Called from any thread;
        must not block on the network."""
        ...

    def stream(self, job: dict[str, Any]) -> AbstractAsyncContextManager[ChunkPoster]:
        """A poster of the job's stream chunks, open while its reply is produced."""
        ...


class WorkerRuntime:
    """`neuroq worker`: through the worker runtime that is running the job."""

    def report_progress(self, job: dict[str, Any], data: dict[str, Any]) -> None:
        if isinstance(job.get("id"), str):
            progress_update(job, data)

    @asynccontextmanager
    async def stream(self, job: dict[str, Any]) -> AsyncIterator[ChunkPoster]:
        async def post(chunk: Any) -> None:
            if isinstance(job.get("id"), str):
                await stream_update(job, chunk)

        yield post


class RunPodRuntime:
    """RunPod's official SDK, through its own senders (imported on use: only the SDK entry
    point needs the package)."""

    def report_progress(self, job: dict[str, Any], data: dict[str, Any]) -> None:
        import runpod

        runpod.serverless.progress_update(job, data)

    @asynccontextmanager
    async def stream(self, job: dict[str, Any]) -> AsyncIterator[ChunkPoster]:
        from runpod.http_client import AsyncClientSession
        from runpod.serverless.modules.rp_http import stream_result

        async with AsyncClientSession() as session:

            async def post(chunk: Any) -> None:
                await stream_result(session, {"output": chunk}, job)

            yield post
