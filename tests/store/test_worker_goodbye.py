"""Contract of `forget_worker`, the store half of a worker's goodbye (`ping?status=leaving`),
run against every store backend (tests/store/conftest.py)."""

from __future__ import annotations

import json

from neuroq.jobs import NewJob, Policy
from neuroq.store.base import JobStore

EP = "ep-bye"
LEASE = 30_000
LOST = 60_000


async def test_a_forgotten_worker_is_never_reported_lost(store: JobStore, t0: int) -> None:
    await store.touch_worker(EP, "w1", t0)
    assert await store.forget_worker(EP, "w1") is True
    assert await store.worker("w1") is None
    result = await store.sweep(t0 + 2 * LOST, LOST, 1)
    assert result.workers_lost == []


async def test_only_that_worker_on_that_endpoint_is_forgotten(store: JobStore, t0: int) -> None:
    await store.touch_worker(EP, "w1", t0)
    await store.touch_worker(EP, "w2", t0)
    assert await store.forget_worker("other-ep", "w1") is False
    assert await store.forget_worker(EP, "w-unknown") is False
    assert await store.forget_worker(EP, "w1") is True
    assert await store.forget_worker(EP, "w1") is False  # a repeated goodbye changes nothing
    assert await store.worker("w1") is None
    assert await store.worker("w2") is not None


async def test_jobs_of_a_forgotten_worker_follow_their_leases(store: JobStore, t0: int) -> None:
    """A worker that left while holding a job (abandoned after its grace period) gets no
    special treatment: the job is requeued when its lease lapses, with the retry counted."""
    await store.submit(
        NewJob(
            endpoint_id=EP,
            input_json=json.dumps(None),
            policy=Policy(execution_timeout_ms=600_000, ttl_ms=86_400_000, low_priority=False),
        ),
        t0,
    )
    (taken,) = await store.take(EP, "w1", 1, t0, LEASE)
    await store.touch_worker(EP, "w1", t0)
    assert await store.forget_worker(EP, "w1") is True
    assert (await store.sweep(t0 + LEASE - 1, LOST, 1)).requeued == []
    result = await store.sweep(t0 + LEASE, LOST, 1)
    assert result.requeued == [taken.id] and result.workers_lost == []
    requeued = await store.get(EP, taken.id)
    assert requeued is not None and requeued.retries == 1
