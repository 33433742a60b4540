"""`worker_take`: one look of a job-take (contact, the worker's state, the take) in one
transaction, on both stores."""

from __future__ import annotations

from neuroq.jobs import JobStatus, NewJob
from neuroq.store.base import RECYCLING, JobStore, TakeLook

EP = "ep-wt"


async def test_first_look_records_contact_and_takes(store: JobStore, t0: int) -> None:
    await store.submit(NewJob(EP, "1"), t0)
    state, jobs = await store.worker_take(TakeLook(EP, "w1", 4, t0 + 5, 60_000, touch=True))
    assert state == "ready"
    assert [j.status for j in jobs] == [JobStatus.IN_PROGRESS]
    info = await store.worker("w1")
    assert info is not None and info.last_seen_ms == t0 + 5 and info.held_job_ids == (jobs[0].id,)


async def test_a_recycling_worker_takes_nothing(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(NewJob(EP, "1"), t0)
    await store.touch_worker(EP, "w1", t0, state=RECYCLING)
    for touch in (True, False):
        state, jobs = await store.worker_take(TakeLook(EP, "w1", 4, t0 + 1, 60_000, touch=touch))
        assert (state, jobs) == (RECYCLING, [])
    still = await store.get(EP, job.id)
    assert still is not None and still.status is JobStatus.IN_QUEUE


async def test_later_looks_only_read_the_state(store: JobStore, t0: int) -> None:
    state, jobs = await store.worker_take(TakeLook(EP, "w-unknown", 1, t0, 60_000, touch=False))
    assert (state, jobs) == (None, [])
    assert await store.worker("w-unknown") is None  # no contact recorded
    await store.submit(NewJob(EP, "1"), t0)
    state, jobs = await store.worker_take(TakeLook(EP, "w-unknown", 1, t0, 60_000, touch=False))
    assert state is None and len(jobs) == 1
