"""An endpoint's configured executionTimeout applied at submit, on every store backend: a job
without one takes the endpoint's, a job that names one keeps it, and an unconfigured endpoint
(or one configured without a timeout) keeps the server default."""

from __future__ import annotations

import json

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import EXECUTION_TIMEOUT_DEFAULT_MS, NewJob, Policy
from neuroq.store.base import JobStore


def _job(endpoint: str, policy: Policy) -> NewJob:
    return NewJob(endpoint_id=endpoint, input_json=json.dumps(1), policy=policy)


async def test_endpoint_timeout_is_the_default_for_jobs_without_one(
    store: JobStore, t0: int
) -> None:
    await store.put_endpoint(EndpointConfig("slow", execution_timeout_ms=7_000), t0)
    implicit, _ = await store.submit(_job("slow", Policy()), t0)
    explicit, _ = await store.submit(
        _job("slow", Policy(execution_timeout_ms=9_000, execution_timeout_explicit=True)), t0
    )
    assert implicit.policy.execution_timeout_ms == 7_000
    assert explicit.policy.execution_timeout_ms == 9_000
    stored = await store.get("slow", implicit.id)
    assert stored is not None and stored.policy.execution_timeout_ms == 7_000


async def test_unconfigured_or_timeout_less_endpoints_keep_the_default(
    store: JobStore, t0: int
) -> None:
    await store.put_endpoint(EndpointConfig("plain", handler="m:f"), t0)
    for endpoint in ("plain", "never-configured"):
        job, _ = await store.submit(_job(endpoint, Policy()), t0)
        assert job.policy.execution_timeout_ms == EXECUTION_TIMEOUT_DEFAULT_MS


async def test_deleting_the_endpoint_ends_its_default(store: JobStore, t0: int) -> None:
    await store.put_endpoint(EndpointConfig("gone", execution_timeout_ms=7_000), t0)
    assert await store.delete_endpoint("gone")
    job, _ = await store.submit(_job("gone", Policy()), t0)
    assert job.policy.execution_timeout_ms == EXECUTION_TIMEOUT_DEFAULT_MS
