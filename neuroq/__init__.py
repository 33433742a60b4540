"""NeuroQ Serverless: a self-hosted, RunPod-compatible asynchronous job service."""

from neuroq import errors
from neuroq.client import (
    AsyncEndpoint,
    AsyncJob,
    Endpoint,
    Job,
    async_send_and_wait,
    send_and_wait,
)
from neuroq.jobs import TERMINAL, JobStatus

__all__ = [
    "TERMINAL",
    "AsyncEndpoint",
    "AsyncJob",
    "Endpoint",
    "Job",
    "JobStatus",
    "async_send_and_wait",
    "errors",
    "send_and_wait",
]
