"""The client routes' lifecycle scenarios on both stores: one suite, two backends.

Every test of tests/api/test_client_jobs.py (submit and status, idempotency, cancel, retry,
purge, health, the status / status-sync / runsync / stream long-polls and the event stream) runs
here again against a server whose store is SQLite, then PostgreSQL. Only the `srv` fixture is
replaced; the scenarios and their other fixtures are the original module's, so the two backends
cannot drift apart and a new scenario there is checked on both here. The PostgreSQL server gets
its own schema in the shared test database (dropped afterwards); without
NEUROQ_TEST_POSTGRES_URL those cases skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import harness
import pytest
from scaling_support import TESTS, load_by_path, scenarios_of

_jobs = load_by_path("neuroq_tests_api_client_jobs", TESTS / "api" / "test_client_jobs.py")

client = _jobs.client
worker = _jobs.worker
globals().update(scenarios_of(_jobs))

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=harness.STORE_BACKENDS)
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[object]:
    """The original module's server settings, on the store this parameter names."""
    with harness.store_env(request.param) as env:
        proc = harness.start_server(
            tmp_path_factory.mktemp(f"conformance-{request.param}"),
            NEUROQ_JOB_TAKE_HOLD_S=str(_jobs.TAKE_HOLD_S),
            NEUROQ_STATUS_MAX_WAIT_MS=str(_jobs.STATUS_MAX_WAIT_MS),
            NEUROQ_RUNSYNC_DEFAULT_WAIT_MS="2000",
            **env,
        )
        yield proc
        proc.stop()
