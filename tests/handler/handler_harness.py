"""Helpers for the handler tests: a real `neuroq serve` plus `neuroq worker
neuroq.handler:handler` processes on loopback, sharing one data directory (checkpoints and
sessions), and a small client for the tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
from harness import ServerProcess, WorkerProcess

from neuroq.jobs import JobStatus

HANDLER = "neuroq.handler:handler"
#: the request users send (docs/handler.md): it must keep working unchanged
SEED_REQUEST = {
    "action": "generate",
    "mode": "layered",
    "prompt": "ChatGPTについて教えて",
    "max_length": 80,
    "temperature": 0.7,
    "repetition_penalty": 2.5,
}
#: a model small enough to train in a second or two on a CPU
TINY = {"embed_dim": 16, "hidden_dim": 32, "num_heads": 2, "num_layers": 1, "max_seq_len": 32}


@dataclass
class Harness:
    server: ServerProcess
    data_dir: Path
    log_dir: Path
    http: httpx.Client
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self, endpoint: str, *args: str) -> WorkerProcess:
        w = harness.start_worker(
            self.server,
            HANDLER,
            endpoint,
            self.log_dir,
            "--ping-interval",
            "1",
            *args,
            NEUROQ_DATA_DIR=str(self.data_dir),
        )
        self.workers.append(w)
        return w

    def run(self, endpoint: str, input_: dict[str, Any]) -> str:
        return harness.submit(self.http, endpoint, input_)

    def status(self, endpoint: str, job_id: str, wait_ms: int = 0) -> dict[str, Any]:
        params = {"wait": wait_ms} if wait_ms else None
        reply = self.http.get(f"/{endpoint}/status/{job_id}", params=params)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def wait_done(self, endpoint: str, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
        return harness.wait_for(
            lambda: self.status(endpoint, job_id, wait_ms=2000),  # a long-poll: no pause needed
            timeout_s,
            f"job {job_id} to finish",
            0,
            until=lambda result: JobStatus(result["status"]).is_terminal,
        )

    def call(self, endpoint: str, input_: dict[str, Any], timeout_s: float = 60) -> dict[str, Any]:
        return self.wait_done(endpoint, self.run(endpoint, input_), timeout_s)

    def stream(self, endpoint: str, job_id: str, timeout_s: float = 60) -> list[Any]:
        return harness.collect_stream(self.http, endpoint, job_id, timeout_s)


def make_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    root = tmp_path_factory.mktemp("handler")
    server = harness.start_server(root / "server")
    http = httpx.Client(base_url=server.base_url, headers=server.client_headers, timeout=30)
    h = Harness(server, root / "data", root / "logs", http)
    yield h
    for w in h.workers:
        w.stop()
    http.close()
    server.stop()


def start_sdk_worker(h: Harness, endpoint: str) -> WorkerProcess:
    """`python -m neuroq.handler` (RunPod's SDK) with the environment `neuroq worker-env` prints.
    The SDK forks a heartbeat process that outlives its parent, so end it with `kill()`, which
    ends the whole process group."""
    env = harness.sdk_worker_env(h.server, endpoint, f"sdk-{endpoint}", h.log_dir / "home")
    env["NEUROQ_DATA_DIR"] = str(h.data_dir)
    log_path = h.log_dir / f"sdk-{endpoint}.log"
    cmd = [sys.executable, "-m", "neuroq.handler"]
    return WorkerProcess(harness.spawn(cmd, log_path, env), log_path)
