"""Fixtures for every test folder. The helpers behind them live in `harness.py`, which test
modules import as `from harness import ...` (pytest puts this folder on sys.path for its
conftest), so no test imports a module named `conftest`, whose name every folder's conftest
shares."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ServerProcess, start_server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server for one test."""
    proc = start_server(tmp_path / "server")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module; tests use distinct endpoint ids to stay apart."""
    proc = start_server(tmp_path_factory.mktemp("server"))
    yield proc
    proc.stop()
