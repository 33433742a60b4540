"""`finish_many`: a worker's batch of results in one transaction, each judged as `finish` would."""

from __future__ import annotations

import asyncio
import json

from neuroq.jobs import Job, JobStatus, NewJob
from neuroq.store import events
from neuroq.store.base import Holder, JobStore, PostedResult, end_topic

EP = "ep-many"


async def test_each_result_is_judged_as_finish_would(store: JobStore, t0: int) -> None:
    for i in range(3):
        await store.submit(NewJob(EP, str(i)), t0)
    a, b, c = await store.take(EP, "w1", 3, t0, 60_000)
    seen: list[events.StoreEvent] = []
    store.events.subscribe(seen.append)
    versions = {job.id: store.notifier.version(end_topic(job.id)) for job in (a, b, c)}

    done = await store.finish_many(
        [
            PostedResult(a.id, '"ok"', None, Holder("w1", attempt=0)),
            PostedResult(b.id, None, '"boom"', Holder("w1")),
            PostedResult(c.id, '"zombie"', None, Holder("w2")),  # not the holder
            PostedResult("no-such-job", '"x"', None, Holder("w1")),
            PostedResult(a.id, '"again"', None, Holder("w1")),  # ended earlier in this batch
        ],
        now_ms=t0 + 1,
        endpoint_id=EP,
    )

    assert _statuses(done) == ["COMPLETED", "FAILED", None, None, None]
    got_a, got_b, got_c = [await store.get(EP, job.id) for job in (a, b, c)]
    assert got_a is not None and got_a.output_json == '"ok"'
    assert got_b is not None and got_b.error_json == '"boom"'
    assert got_c is not None and got_c.status is JobStatus.IN_PROGRESS
    assert seen == [events.JobsEnded((done[0], done[1]))]  # type: ignore[arg-type]
    moved = {
        job_id for job_id, v in versions.items() if store.notifier.version(end_topic(job_id)) != v
    }
    assert moved == {a.id, b.id}


async def test_results_for_another_endpoint_are_ignored(store: JobStore, t0: int) -> None:
    await store.submit(NewJob(EP, "1"), t0)
    (job,) = await store.take(EP, "w1", 1, t0, 60_000)
    done = await store.finish_many(
        [PostedResult(job.id, '"ok"', None, Holder("w1"))], now_ms=t0 + 1, endpoint_id="other"
    )
    assert done == [None]
    assert await store.finish_many([], now_ms=t0 + 1) == []


async def test_batches_sharing_jobs_in_opposite_orders_do_not_deadlock(
    store: JobStore, t0: int
) -> None:
    """Two batches naming the same jobs in opposite orders (a worker's retried batch racing
    its first send): on PostgreSQL, rows locked in the order given would deadlock, and one
    batch would fail instead of being judged."""
    for i in range(20):
        await store.submit(NewJob(EP, str(i)), t0)
    jobs = await store.take(EP, "w1", 20, t0, 60_000)
    forward = [PostedResult(j.id, '"ok"', None, Holder("w1")) for j in jobs]
    first, second = await asyncio.gather(
        store.finish_many(forward, now_ms=t0 + 1, endpoint_id=EP),
        store.finish_many(forward[::-1], now_ms=t0 + 1, endpoint_id=EP),
    )
    # Each job ended exactly once, by one batch or the other.
    assert all((a is None) != (b is None) for a, b in zip(first, second[::-1], strict=True))


async def test_one_posters_batch_is_judged_as_finish_would(store: JobStore, t0: int) -> None:
    """The route's case: every result from one worker, each naming its own attempt."""
    for i in range(5):
        await store.submit(NewJob(EP, str(i)), t0)
    a, b, c, d, e = await store.take(EP, "w1", 5, t0, 60_000)
    await store.cancel(EP, d.id, t0)  # d's worker is to stop: stop_pending until it lets go
    assert await store.jobs_to_stop("w1") == [d.id]
    w1 = Holder("w1")
    done = await store.finish_many(
        [
            PostedResult(a.id, '"ok"', None, Holder("w1", attempt=0)),
            PostedResult(b.id, None, '"boom"', w1),
            PostedResult(c.id, '"stale"', None, Holder("w1", attempt=3)),  # an older attempt
            PostedResult(c.id, '"fresh"', None, Holder("w1", attempt=0)),  # the same job again
            PostedResult(d.id, '"late"', None, w1),  # cancelled meanwhile
            PostedResult("no-such-job", '"x"', None, w1),
            PostedResult(e.id, '{"big": [1, "\\u00e9"]}', None, w1),
        ],
        now_ms=t0 + 1,
        endpoint_id=EP,
    )
    assert _statuses(done) == ["COMPLETED", "FAILED", None, "COMPLETED", None, None, "COMPLETED"]
    stored = {job.id: await store.get(EP, job.id) for job in (a, b, c, d, e)}
    assert stored[a.id].output_json == '"ok"'  # type: ignore[union-attr]
    assert stored[b.id].error_json == '"boom"'  # type: ignore[union-attr]
    assert stored[c.id].output_json == '"fresh"'  # type: ignore[union-attr]
    assert stored[d.id].status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert stored[e.id].output_json == '{"big": [1, "\\u00e9"]}'  # type: ignore[union-attr]
    assert done[0] == stored[a.id] and done[6] == stored[e.id]
    assert await store.jobs_to_stop("w1") == []  # its result let go of the cancelled job


async def test_a_batch_queues_the_webhooks_of_the_jobs_it_ends(store: JobStore, t0: int) -> None:
    hooked, _ = await store.submit(NewJob(EP, "1", webhook="https://hook.example/a"), t0)
    plain, _ = await store.submit(NewJob(EP, "2"), t0)
    await store.take(EP, "w1", 2, t0, 60_000)
    results = [PostedResult(j.id, '"ok"', None, Holder("w1")) for j in (hooked, plain)]
    done = await store.finish_many(results, now_ms=t0 + 1, endpoint_id=EP)
    assert all(job is not None for job in done)
    (delivery,) = await store.job_webhooks(hooked.id)
    assert delivery.url == "https://hook.example/a"
    assert json.loads(delivery.body_json)["output"] == "ok"
    assert await store.job_webhooks(plain.id) == []


def _statuses(done: list[Job | None]) -> list[str | None]:
    return [job.status.value if job else None for job in done]
