"""The `store` fixture: one fresh, open store per test, for every backend that can run here.

PostgreSQL runs when NEUROQ_TEST_POSTGRES_URL is set; each test then gets its own schema, dropped
afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, POSTGRES_URL, drop_schema, open_store

from neuroq.jobs import now_ms
from neuroq.store.base import JobStore


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgres" and not POSTGRES_URL:
        pytest.skip("set NEUROQ_TEST_POSTGRES_URL to run the contract suite on PostgreSQL")
    return name


@pytest.fixture
async def store(backend: str, tmp_path: Path) -> AsyncIterator[JobStore]:
    schema = f"t_{secrets.token_hex(6)}" if backend == "postgres" else None
    opened = await open_store(backend, tmp_path, schema)
    try:
        yield opened
    finally:
        await opened.close()
        if schema is not None:
            await drop_schema(schema)


@pytest.fixture
def t0() -> int:
    """A wall-clock anchor: `get` and `read_stream` judge retention by the real clock, so test
    times are offsets from now rather than small constants."""
    return now_ms()
