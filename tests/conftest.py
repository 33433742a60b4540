"""Fixtures for every test folder. The helpers behind them live in `harness.py`, which test
modules import as `from harness import ...` (pytest puts this folder on sys.path for its
conftest), so no test imports a module named `conftest`, whose name every folder's conftest
shares."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import (
    ProcessInfo,
    ServerProcess,
    in_process_app,
    leftover_processes,
    new_endpoint,
    start_server,
    store_env,
)
from starlette.testclient import TestClient


def _ends_with_pytest(info: ProcessInfo) -> bool:
    """multiprocessing's resource tracker, which the first spawn-context process or lock starts
    for this process (tests/store/test_sqlite_processes.py) and which exits as soon as this
    process closes its end of the tracker's pipe: it cannot outlive the session."""
    tracker = "from multiprocessing.resource_tracker import main"
    return info.ppid == os.getpid() and tracker in info.cmdline


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_session() -> Iterator[None]:
    """Every process a test starts must end with it, its children included. Whatever this
    session started and is still alive once every other fixture has ended is killed here, and the
    suite fails listing it. A process gets two seconds to finish exiting first."""
    yield

    def still_alive() -> list[ProcessInfo]:
        return [info for info in leftover_processes() if not _ends_with_pytest(info)]

    deadline = time.monotonic() + 2.0
    while (left := still_alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    if not left:
        return
    for info in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(info.pid, signal.SIGKILL)
    lines = "\n".join(f"  pid {p.pid} (parent {p.ppid}): {p.cmdline}" for p in left)
    pytest.fail(f"{len(left)} process(es) outlived the tests that started them:\n{lines}")


@pytest.fixture(scope="module")
def backend() -> str:
    """The store of the servers `server` and `shared_server` start (and of any server fixture
    that asks for it): SQLite. A module runs on both stores by overriding this fixture with
    `params=STORE_BACKENDS`; the PostgreSQL cases skip without NEUROQ_TEST_POSTGRES_URL."""
    return "sqlite"


@pytest.fixture
def server(tmp_path: Path, backend: str) -> Iterator[ServerProcess]:
    """A fresh server for one test."""
    with store_env(backend) as env:
        proc = start_server(tmp_path / "server", **env)
        yield proc
        proc.stop()


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Iterator[ServerProcess]:
    """One server for a whole test module; tests use distinct endpoint ids to stay apart."""
    with store_env(backend) as env:
        proc = start_server(tmp_path_factory.mktemp(f"server-{backend}"), **env)
        yield proc
        proc.stop()


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The server's app in this process, shared by a module, for route tests that need no real
    process (see harness.in_process_app); tests use distinct endpoint ids to stay apart."""
    with in_process_app(tmp_path_factory.mktemp("app")) as client:
        yield client


@pytest.fixture
def ep() -> str:
    """A fresh endpoint id per test, so tests on a shared server never see each other's jobs."""
    return new_endpoint()
