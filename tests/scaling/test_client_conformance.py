"""The client end to end on PostgreSQL: the scenarios of tests/client/test_client_e2e.py (send
and wait, failures, timeouts, streams, cancel, retry, runsync, health and purge, idempotency)
with real `neuroq worker` processes, against a server whose store is a PostgreSQL schema of its
own. That module runs them on SQLite; here only the server fixture changes, and only the asyncio
client runs (the blocking one speaks the same protocol and doubles the time, not the coverage
of the store). Skips without NEUROQ_TEST_POSTGRES_URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import harness
import pytest
from scaling_support import TESTS, load_by_path, scenarios_of

_e2e = load_by_path("neuroq_tests_client_e2e", TESTS / "client" / "test_client_e2e.py")

workers = _e2e.workers
globals().update(scenarios_of(_e2e))

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with harness.store_env("postgres") as env:
        proc = harness.start_server(tmp_path_factory.mktemp("client-postgres"), **env)
        yield proc
        proc.stop()


@pytest.fixture
async def client(shared_server: object, workers: object) -> AsyncIterator[object]:
    c = _e2e.Client("async", shared_server)
    yield c
    await c.close()
