"""A server with workers for the dashboard tests, a signed-in HTTP session on it, and the
client calls the tests make beside the pages (harness's `submit` and `status`)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness
import httpx
from harness import ServerProcess, WorkerProcess, start_server, start_worker

#: endpoints served by the module's workers
SLEEP_EP = "dash-sleep"
STREAM_EP = "dash-stream"
#: the playground's default endpoint, served by the real NeuroQ handler
NEUROQ_EP = "neuroq"


@dataclass
class Stack:
    server: ServerProcess
    workers: list[WorkerProcess]
    tmp: Path


@contextlib.contextmanager
def running_stack(tmp: Path) -> Iterator[Stack]:
    server = start_server(tmp / "srv")
    workers = [
        start_worker(server, "neuroq.demo_handlers:sleep", SLEEP_EP, tmp, "--concurrency", "2"),
        start_worker(server, "neuroq.demo_handlers:stream", STREAM_EP, tmp),
        start_worker(
            server, "neuroq.handler:handler", NEUROQ_EP, tmp, NEUROQ_DATA_DIR=str(tmp / "nq")
        ),
    ]
    try:
        yield Stack(server, workers, tmp)
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def csrf_of(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([0-9a-f]*)">', html)
    assert match is not None, "page has no csrf-token meta"
    return match.group(1)


@contextlib.contextmanager
def sign_in(server: Any, key: str | None = None) -> Iterator[httpx.Client]:
    """An httpx client holding a dashboard session cookie."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        reply = client.post("/login", data={"key": key or server.api_key, "next": "/"})
        assert reply.status_code == 303, reply.text
        yield client


def submit_job(server: ServerProcess, endpoint: str, job_input: Any = None) -> str:
    """POST /run of `job_input` (harness.submit's default when None) with the client key; the
    new job's id."""
    with server.client() as client:
        return harness.submit(client, endpoint, job_input)


def job_status(server: ServerProcess, endpoint: str, job_id: str) -> str:
    """The job's status through GET /status."""
    with server.client() as client:
        return str(harness.status(client, endpoint, job_id)["status"])
