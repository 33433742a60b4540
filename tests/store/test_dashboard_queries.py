"""The store's read-only query behind the dashboard's plots (`finished_minutes`), on every
backend: the plots read finished jobs from the database so they survive a restart."""

from __future__ import annotations

from store_backends import RETENTION_RUN_MS

from neuroq.jobs import NewJob
from neuroq.store.base import JobStore

MINUTE = 60_000
HOUR = 3_600_000


def new(endpoint: str, retention_ms: int | None = HOUR) -> NewJob:
    return NewJob(endpoint_id=endpoint, input_json="{}", retention_ms=retention_ms)


async def run_job(
    store: JobStore,
    endpoint: str,
    submit_at: int,
    take_at: int,
    end_at: int,
    *,
    ok: bool = True,
    retention_ms: int | None = HOUR,
) -> str:
    job, _ = await store.submit(new(endpoint, retention_ms), submit_at)
    (taken,) = await store.take(endpoint, "w1", 1, take_at, 600_000)
    await store.finish(
        taken.id,
        output_json="1" if ok else None,
        error_json=None if ok else '"boom"',
        now_ms=end_at,
    )
    return job.id


async def test_finished_jobs_are_counted_per_endpoint_and_minute(store: JobStore, t0: int) -> None:
    since = t0 - 10 * MINUTE
    # minute 1 of ep-a: one job waited 1 s and ran 2 s, another waited 3 s, ran 4 s and failed
    await run_job(store, "ep-a", since + MINUTE, since + MINUTE + 1000, since + MINUTE + 3000)
    await run_job(
        store, "ep-a", since + MINUTE, since + MINUTE + 3000, since + MINUTE + 7000, ok=False
    )
    # minute 4 of ep-a, minute 2 of ep-b
    await run_job(store, "ep-a", since + 4 * MINUTE, since + 4 * MINUTE, since + 4 * MINUTE + 10)
    await run_job(store, "ep-b", since + 2 * MINUTE, since + 2 * MINUTE, since + 2 * MINUTE + 500)
    # cancelled while queued: finished, never taken, so no timings
    queued, _ = await store.submit(new("ep-b"), since)
    await store.cancel("ep-b", queued.id, since + 2 * MINUTE + 100)
    # still running, and finished before the window: not counted
    await store.submit(new("ep-a"), since)
    await run_job(store, "ep-a", since - 3 * MINUTE, since - 3 * MINUTE, since - 2 * MINUTE)

    minutes = await store.finished_minutes(since, t0)

    by_key = {(m.endpoint_id, m.at_ms): m for m in minutes}
    assert list(by_key) == [
        ("ep-a", since + MINUTE),
        ("ep-a", since + 4 * MINUTE),
        ("ep-b", since + 2 * MINUTE),
    ]
    first = by_key["ep-a", since + MINUTE]
    assert (first.finished, first.completed) == (2, 1)
    assert first.mean_execution_ms == 3000.0 and first.max_execution_ms == 4000
    assert first.mean_delay_ms == 2000.0 and first.max_delay_ms == 3000
    b = by_key["ep-b", since + 2 * MINUTE]
    assert (b.finished, b.completed) == (2, 1)
    assert b.mean_execution_ms == 500.0 and b.max_delay_ms == 0


async def test_jobs_past_their_retention_are_not_counted(store: JobStore, t0: int) -> None:
    since = t0 - 10 * MINUTE
    await run_job(
        store, "ep", since + MINUTE, since + MINUTE, since + MINUTE + 5, retention_ms=None
    )
    assert len(await store.finished_minutes(since, since + MINUTE + 10)) == 1
    later = since + MINUTE + 5 + RETENTION_RUN_MS + 1
    assert await store.finished_minutes(since, later) == []


async def test_an_empty_store_has_no_minutes(store: JobStore, t0: int) -> None:
    assert await store.finished_minutes(t0 - HOUR, t0) == []
