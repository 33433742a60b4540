"""Clients for the job API: `Endpoint`/`Job` (blocking) and `AsyncEndpoint`/`AsyncJob`
(asyncio), plus the users' guide helpers `send_and_wait`/`async_send_and_wait`. They speak the
RunPod client API, so pointing `NEUROQ_API_URL` at https://api.runpod.ai/v2 works too."""

from neuroq.client.aio import AsyncEndpoint, AsyncJob, async_send_and_wait
from neuroq.client.sync import Endpoint, Job, send_and_wait

__all__ = ["AsyncEndpoint", "AsyncJob", "Endpoint", "Job", "async_send_and_wait", "send_and_wait"]
