"""`worker_take`: one look of a job-take (contact, then the take unless the worker is
recycling), on both stores."""

from __future__ import annotations

from neuroq.jobs import JobStatus, NewJob
from neuroq.store.base import RECYCLING, JobStore, TakeLook

EP = "ep-wt"


async def test_first_look_records_contact_and_takes(store: JobStore, t0: int) -> None:
    await store.submit(NewJob(EP, "1"), t0)
    recycling, jobs = await store.worker_take(TakeLook(EP, "w1", 4, t0 + 5, 60_000, touch=True))
    assert not recycling
    assert [j.status for j in jobs] == [JobStatus.IN_PROGRESS]
    info = await store.worker("w1")
    assert info is not None and info.last_seen_ms == t0 + 5 and info.held_job_ids == (jobs[0].id,)
    assert info.state == "ready"


async def test_a_recycling_worker_takes_nothing(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(NewJob(EP, "1"), t0)
    await store.touch_worker(EP, "w1", t0, state=RECYCLING)
    for touch in (True, False):
        look = TakeLook(EP, "w1", 4, t0 + 1, 60_000, touch=touch)
        assert await store.worker_take(look) == (True, [])
    still = await store.get(EP, job.id)
    assert still is not None and still.status is JobStatus.IN_QUEUE
    info = await store.worker("w1")  # the contact was recorded, the state kept
    assert info is not None and info.state == RECYCLING and info.last_seen_ms == t0 + 1


async def test_a_recycling_worker_lets_other_workers_take(store: JobStore, t0: int) -> None:
    await store.submit(NewJob(EP, "1"), t0)
    await store.touch_worker(EP, "w1", t0, state=RECYCLING)
    assert await store.worker_take(TakeLook(EP, "w1", 1, t0, 60_000, touch=True)) == (True, [])
    recycling, jobs = await store.worker_take(TakeLook(EP, "w2", 1, t0, 60_000, touch=True))
    assert not recycling and len(jobs) == 1


async def test_an_empty_queue_says_whether_the_worker_recycles(store: JobStore, t0: int) -> None:
    assert await store.worker_take(TakeLook(EP, "w1", 2, t0, 60_000, touch=True)) == (False, [])
    await store.touch_worker(EP, "w1", t0, state=RECYCLING)
    assert await store.worker_take(TakeLook(EP, "w1", 2, t0, 60_000, touch=True)) == (True, [])


async def test_a_take_with_no_room_only_records_contact(store: JobStore, t0: int) -> None:
    await store.submit(NewJob(EP, "1"), t0)
    assert await store.worker_take(TakeLook(EP, "w1", 0, t0 + 2, 60_000, touch=True)) == (
        False,
        [],
    )
    info = await store.worker("w1")
    assert info is not None and info.last_seen_ms == t0 + 2


async def test_later_looks_record_no_contact(store: JobStore, t0: int) -> None:
    look = TakeLook(EP, "w-unknown", 1, t0, 60_000, touch=False)
    assert await store.worker_take(look) == (False, [])
    assert await store.worker("w-unknown") is None  # no contact recorded
    await store.submit(NewJob(EP, "1"), t0)
    recycling, jobs = await store.worker_take(look)
    assert not recycling and len(jobs) == 1
    assert await store.worker("w-unknown") is None
