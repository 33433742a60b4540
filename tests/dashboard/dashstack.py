"""A server with workers for the dashboard tests, and a signed-in HTTP session on it.

A plain module rather than a conftest, so that it never shadows (or is shadowed by) another."""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx


def _root_conftest() -> ModuleType:
    """tests/conftest.py, loaded by path: under pytest's default import mode every conftest.py is
    the module `conftest`, so `from conftest import ...` finds whichever directory's conftest
    was imported last (tests/store's, tests/worker's...) once the whole suite is collected."""
    path = Path(__file__).resolve().parents[1] / "conftest.py"
    spec = importlib.util.spec_from_file_location("neuroq_tests_conftest", path)
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


_root = _root_conftest()
ServerProcess = _root.ServerProcess
WorkerProcess = _root.WorkerProcess
start_server = _root.start_server
start_worker = _root.start_worker

#: endpoints served by the module's workers
SLEEP_EP = "dash-sleep"
STREAM_EP = "dash-stream"


@dataclass
class Stack:
    server: Any  # conftest.ServerProcess
    workers: list[Any]  # conftest.WorkerProcess
    tmp: Path


@contextlib.contextmanager
def running_stack(tmp: Path) -> Iterator[Stack]:
    server = start_server(tmp / "srv")
    workers = [
        start_worker(server, "neuroq.demo_handlers:sleep", SLEEP_EP, tmp, "--concurrency", "2"),
        start_worker(server, "neuroq.demo_handlers:stream", STREAM_EP, tmp),
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
