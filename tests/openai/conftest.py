"""Fixtures of the OpenAI-route tests: one real `neuroq serve` for the folder, with its workers
started once each and only when a test needs them (each on its own endpoint):

- `neuroq_ep`: `neuroq worker neuroq.handler:handler --concurrency 8` (the NeuroQ handler);
- `fake_ep` / `fake_list_ep`: fake_vllm_worker.py under RunPod's SDK, yielding raw SSE strings
  or lists of chunk dicts;
- `sdk_neuroq_ep`: `python -m neuroq.handler` under RunPod's SDK in its generator form
  (NEUROQ_GENERATOR=1), as it would run on hosted RunPod; `sdk_coroutine_ep` in its default
  form.

Every process is ended when the session's fixtures end (tests/conftest.py checks it).
"""

from __future__ import annotations

from collections.abc import Iterator

import harness
import pytest
from harness import ServerProcess, WorkerProcess
from openai_harness import FAKE_WORKER, Workers


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = harness.start_server(tmp_path_factory.mktemp("openai-server"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def workers(
    openai_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    started = Workers(openai_server, tmp_path_factory.mktemp("openai-workers"))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def neuroq_ep(workers: Workers) -> str:
    return workers.once("neuroq", lambda: workers.neuroq("neuroq"))


@pytest.fixture(scope="session")
def fake_ep(workers: Workers) -> str:
    script = [str(FAKE_WORKER)]
    return workers.once("fake", lambda: workers.sdk("fake", script, FAKE_FORM="raw"))


@pytest.fixture(scope="session")
def fake_list_ep(workers: Workers) -> str:
    script = [str(FAKE_WORKER)]
    return workers.once("fake-list", lambda: workers.sdk("fake-list", script, FAKE_FORM="list"))


@pytest.fixture(scope="session")
def sdk_neuroq_ep(workers: Workers) -> str:
    def start() -> WorkerProcess:
        data = str(workers.root / "data")
        return workers.sdk(
            "neuroq-sdk", ["-m", "neuroq.handler"], NEUROQ_GENERATOR="1", NEUROQ_DATA_DIR=data
        )

    return workers.once("neuroq-sdk", start)


@pytest.fixture(scope="session")
def sdk_coroutine_ep(workers: Workers) -> str:
    """`python -m neuroq.handler` as it is by default: the coroutine handler, which posts its
    OpenAI values to the stream itself."""

    def start() -> WorkerProcess:
        data = str(workers.root / "data")
        return workers.sdk("neuroq-sdk-co", ["-m", "neuroq.handler"], NEUROQ_DATA_DIR=data)

    return workers.once("neuroq-sdk-co", start)
