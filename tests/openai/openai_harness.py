"""Helpers of the OpenAI-route tests (fixtures are in conftest.py): the worker starter, and the
official `openai` clients pointed at an endpoint's OpenAI base URL."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import harness
import openai
from harness import ServerProcess, WorkerProcess

HERE = Path(__file__).resolve().parent
FAKE_WORKER = HERE / "fake_vllm_worker.py"


class Workers:
    """Starts each worker at most once per session, and ends them all."""

    def __init__(self, server: ServerProcess, root: Path) -> None:
        self.server, self.root = server, root
        self.started: dict[str, WorkerProcess] = {}

    def once(self, endpoint: str, start: Callable[[], WorkerProcess]) -> str:
        if endpoint not in self.started:
            self.started[endpoint] = start()
        return endpoint

    def neuroq(self, endpoint: str) -> WorkerProcess:
        return harness.start_worker(
            self.server,
            "neuroq.handler:handler",
            endpoint,
            self.root / "logs",
            "--concurrency",
            "8",
            NEUROQ_DATA_DIR=str(self.root / "data"),
        )

    def sdk(self, endpoint: str, script: list[str], **env: str) -> WorkerProcess:
        """An SDK worker with the environment `neuroq worker-env` prints (harness.py)."""
        home = self.root / f"home-{endpoint}"
        full_env = harness.sdk_worker_env(self.server, endpoint, f"sdk-{endpoint}", home)
        full_env.update(env)
        log_path = self.root / f"sdk-{endpoint}.log"
        proc = harness.spawn([sys.executable, *script], log_path, full_env, cwd=home)
        return WorkerProcess(proc, log_path)

    def stop(self) -> None:
        for worker in self.started.values():
            worker.kill()


def base_url(server: ServerProcess, endpoint: str) -> str:
    """What an OpenAI client is given, as on RunPod: `.../v2/<endpoint>/openai/v1`."""
    return f"{server.base_url}/{endpoint}/openai/v1"


def client(server: ServerProcess, endpoint: str, api_key: str | None = None) -> openai.OpenAI:
    """The official client, without retries (a test wants the first answer)."""
    return openai.OpenAI(
        base_url=base_url(server, endpoint),
        api_key=api_key or server.api_key,
        max_retries=0,
        timeout=60,
    )


def async_client(server: ServerProcess, endpoint: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=base_url(server, endpoint), api_key=server.api_key, max_retries=0, timeout=60
    )
