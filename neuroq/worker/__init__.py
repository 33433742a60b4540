"""The worker runtime: run a handler against a NeuroQ (or RunPod-protocol) server.

Handlers import from here: `progress_update(job, data)`, `stream_update(job, chunk)`,
`stop_requested(job)` and the `handler(aggregate=True)` decorator.
"""

from neuroq.worker.handlers import Handler, HandlerKind, HandlerLoadError, handler, load_handler
from neuroq.worker.runtime import (
    Worker,
    arun_worker,
    progress_update,
    run_worker,
    stop_requested,
    stream_update,
)
from neuroq.worker.transport import Transport, WorkerAuthError

__all__ = [
    "Handler",
    "HandlerKind",
    "HandlerLoadError",
    "Transport",
    "Worker",
    "WorkerAuthError",
    "arun_worker",
    "handler",
    "load_handler",
    "progress_update",
    "run_worker",
    "stop_requested",
    "stream_update",
]
