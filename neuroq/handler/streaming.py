"""Streaming pieces and progress from a handler that is *not* a generator.

Why not a generator: both our worker and the RunPod SDK make a generator's final output the list
of its chunks (`return_aggregate_stream`) or `[]`, never a dict, so `output["generated"]` -
what every existing client reads - would break. The handler is therefore an ordinary coroutine
that returns the result object, and posts its stream chunks itself to the same job-stream route
a generator's chunks go to:

- under `neuroq worker`, through `neuroq.worker.stream_update` (in order, retried, and
  dropped once the job is stopped);
- under the RunPod SDK (`python -m neuroq.handler`), to `RUNPOD_WEBHOOK_POST_STREAM` with the
  worker key, exactly as the SDK posts a generator's chunks;
- anywhere else (a direct call in a test or a script), nowhere.

Progress updates go through `neuroq.worker.progress_update` or `runpod.serverless.progress_update`.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import httpx

log = logging.getLogger("neuroq.handler")

#: set by `python -m neuroq.handler` before it hands the handler to the RunPod SDK
RUNTIME = {"name": "neuroq"}


class StreamSink:
    """Posts one job's stream chunks, in order; each `send` returns once its post is done."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job_id = str(job.get("id", ""))
        self._client: httpx.AsyncClient | None = None
        #: chunks that reached the server side (tests and logs)
        self.sent = 0

    async def send(self, chunk: Any) -> None:
        try:
            if RUNTIME["name"] == "runpod":
                await self._send_runpod(json.dumps({"output": chunk}, ensure_ascii=False).encode())
                return
            from neuroq.worker import stream_update

            if await stream_update({"id": self.job_id}, chunk):
                self.sent += 1
        except Exception as exc:  # a lost chunk must never fail the job: the final output has all
            log.warning("job %s: stream chunk lost: %s", self.job_id, exc)

    async def _send_runpod(self, body: bytes) -> None:
        template = os.environ.get("RUNPOD_WEBHOOK_POST_STREAM")
        if not template:
            return
        url = template.replace("$ID", self.job_id).replace(
            "$RUNPOD_POD_ID", os.environ.get("RUNPOD_POD_ID", "")
        )
        url += ("&" if "?" in url else "?") + "isStream=false"
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        headers = {
            "Authorization": os.environ.get("RUNPOD_AI_API_KEY", ""),
            "Content-Type": "application/json",
        }
        response = await self._client.post(url, content=body, headers=headers)
        response.raise_for_status()
        self.sent += 1

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def report_progress(job: dict[str, Any], data: dict[str, Any]) -> None:
    """Show `data` as the job's output in /status while it runs (any thread)."""
    try:
        if RUNTIME["name"] == "runpod":
            import runpod

            runpod.serverless.progress_update(job, data)
        else:
            from neuroq.worker import progress_update

            progress_update(job, data)
    except Exception as exc:
        log.warning("job %s: progress update lost: %s", job.get("id"), exc)
