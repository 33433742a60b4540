"""The JobStore contract (neuroq/store/base.py), run against every backend in conftest.py.

Time is driven through the `now_ms` arguments; nothing sleeps. `t0` is the real clock at the start
of a test because `get` and `read_stream` judge retention by the wall clock.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from store_backends import RETENTION_RUN_MS, RETENTION_SYNC_MS

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import JobStatus, NewJob, Policy
from neuroq.store import events
from neuroq.store.base import (
    Holder,
    InvalidTransition,
    JobStore,
    QueueStats,
    end_topic,
    job_topic,
    queue_topic,
    stop_topic,
)

EP = "ep-a"
LEASE = 30_000
LOST = 60_000


def new(
    input_value: object = None,
    *,
    endpoint: str = EP,
    low: bool = False,
    webhook: str | None = None,
    sync: bool = False,
    retention_ms: int | None = None,
    execution_timeout_ms: int = 600_000,
    ttl_ms: int = 86_400_000,
) -> NewJob:
    return NewJob(
        endpoint_id=endpoint,
        input_json=json.dumps(input_value),
        policy=Policy(execution_timeout_ms=execution_timeout_ms, ttl_ms=ttl_ms, low_priority=low),
        webhook=webhook,
        sync=sync,
        retention_ms=retention_ms,
    )


async def running(store: JobStore, t: int, worker: str = "w1", **kwargs: object) -> str:
    """Submit one job and have `worker` take it; its id."""
    job, _ = await store.submit(new(**kwargs), t)  # type: ignore[arg-type]
    (taken,) = await store.take(job.endpoint_id, worker, 1, t, LEASE)
    assert taken.id == job.id
    return job.id


# -- submit, get, take -------------------------------------------------------------------------


async def test_submit_then_get_round_trips_every_field(store: JobStore, t0: int) -> None:
    nj = NewJob(
        endpoint_id=EP,
        input_json='{"prompt": "hi"}',
        policy=Policy(execution_timeout_ms=9_000, ttl_ms=20_000, low_priority=True),
        webhook="http://hook.example/x",
        s3_config_json='{"bucketName": "b"}',
        sync=True,
        id="sync-custom-id-u1",
    )
    job, created = await store.submit(nj, t0)
    assert created
    assert job.id == "sync-custom-id-u1"
    assert job.status is JobStatus.IN_QUEUE
    got = await store.get(EP, job.id)
    assert got == job
    assert got.policy == nj.policy and got.sync and got.webhook == nj.webhook
    assert got.s3_config_json == nj.s3_config_json and got.created_at_ms == t0
    assert await store.get("other-endpoint", job.id) is None
    assert await store.get(EP, "no-such-job") is None


async def test_generated_ids_are_unique_and_marked_sync(store: JobStore, t0: int) -> None:
    a, _ = await store.submit(new(), t0)
    b, _ = await store.submit(new(sync=True), t0)
    assert a.id != b.id
    assert b.id.startswith("sync-") and not a.id.startswith("sync-")


async def test_take_is_fifo_with_low_priority_last(store: JobStore, t0: int) -> None:
    ids = []
    for i, low in enumerate([True, False, True, False, False]):
        job, _ = await store.submit(new(i, low=low), t0 + i)
        ids.append(job.id)
    taken = await store.take(EP, "w1", 10, t0 + 10, LEASE)
    assert [j.id for j in taken] == [ids[1], ids[3], ids[4], ids[0], ids[2]]
    for job in taken:
        assert job.status is JobStatus.IN_PROGRESS
        assert job.worker_id == "w1"
        assert job.started_at_ms == t0 + 10
        assert job.lease_expires_at_ms == t0 + 10 + LEASE


async def test_a_limited_take_picks_normal_priority_first(store: JobStore, t0: int) -> None:
    low, _ = await store.submit(new(0, low=True), t0)
    normal, _ = await store.submit(new(1), t0 + 1)
    assert [j.id for j in await store.take(EP, "w1", 1, t0 + 2, LEASE)] == [normal.id]
    assert [j.id for j in await store.take(EP, "w1", 1, t0 + 2, LEASE)] == [low.id]


async def test_take_respects_limit_and_never_gives_a_job_twice(store: JobStore, t0: int) -> None:
    ids = [(await store.submit(new(i), t0))[0].id for i in range(5)]
    first = await store.take(EP, "w1", 2, t0, LEASE)
    second = await store.take(EP, "w2", 2, t0, LEASE)
    third = await store.take(EP, "w3", 2, t0, LEASE)
    assert [j.id for j in first] == ids[:2]
    assert [j.id for j in second] == ids[2:4]
    assert [j.id for j in third] == ids[4:]
    assert await store.take(EP, "w4", 2, t0, LEASE) == []
    assert await store.take(EP, "w4", 0, t0, LEASE) == []


async def test_take_only_from_its_endpoint_and_skips_expired_ttl(store: JobStore, t0: int) -> None:
    await store.submit(new(endpoint="ep-b"), t0)
    stale, _ = await store.submit(new(ttl_ms=10_000), t0)
    assert await store.take(EP, "w1", 5, t0 + 10_000, LEASE) == []
    assert (await store.get(EP, stale.id)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]


async def test_idempotency_key_returns_the_retained_job(store: JobStore, t0: int) -> None:
    first, created = await store.submit(new(1), t0, idempotency_key="k1")
    again, created_again = await store.submit(new(2), t0 + 1, idempotency_key="k1")
    assert created and not created_again
    assert again.id == first.id and again.input_json == "1"
    other, created_other = await store.submit(new(3, endpoint="ep-b"), t0, idempotency_key="k1")
    assert created_other and other.id != first.id
    plain, created_plain = await store.submit(new(4), t0)
    assert created_plain and plain.id != first.id


async def test_idempotency_key_is_free_again_after_retention(store: JobStore, t0: int) -> None:
    old_t = t0 - 10 * RETENTION_RUN_MS
    first, _ = await store.submit(new(1), old_t, idempotency_key="k")
    assert await store.cancel(EP, first.id, old_t) is not None  # expires long before t0
    second, created = await store.submit(new(2), t0, idempotency_key="k")
    assert created and second.id != first.id
    assert await store.get(EP, first.id) is None


# -- cancel and stop signals -------------------------------------------------------------------


async def test_cancel_queued_job(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(new(), t0)
    cancelled = await store.cancel(EP, job.id, t0 + 5)
    assert cancelled is not None
    assert cancelled.status is JobStatus.CANCELLED
    assert not cancelled.stop_pending
    assert cancelled.finished_at_ms == t0 + 5
    assert await store.take(EP, "w1", 1, t0 + 6, LEASE) == []
    assert await store.cancel(EP, "unknown", t0) is None
    assert await store.cancel("ep-b", job.id, t0) is None


async def test_cancel_running_job_signals_its_worker(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    version = store.notifier.version(stop_topic("w1"))
    cancelled = await store.cancel(EP, job_id, t0 + 1)
    assert cancelled is not None and cancelled.status is JobStatus.CANCELLED
    assert cancelled.stop_pending and cancelled.worker_id == "w1"
    assert store.notifier.version(stop_topic("w1")) > version
    assert await store.jobs_to_stop("w1") == [job_id]
    assert await store.jobs_to_stop("w2") == []
    # cancelling again changes nothing
    again = await store.cancel(EP, job_id, t0 + 2)
    assert again is not None and again.finished_at_ms == t0 + 1
    # a ping that still lists the job keeps the signal; one without it clears it
    await store.touch_worker(EP, "w1", t0 + 3, held_job_ids=[job_id])
    assert await store.jobs_to_stop("w1") == [job_id]
    await store.touch_worker(EP, "w1", t0 + 4, held_job_ids=[])
    assert await store.jobs_to_stop("w1") == []


async def test_finish_after_cancel_changes_nothing_but_clears_the_signal(
    store: JobStore, t0: int
) -> None:
    job_id = await running(store, t0)
    await store.cancel(EP, job_id, t0 + 1)
    assert await store.finish(job_id, output_json="1", error_json=None, now_ms=t0 + 2) is None
    job = await store.get(EP, job_id)
    assert job is not None and job.status is JobStatus.CANCELLED and job.output_json is None
    assert not job.stop_pending
    assert await store.jobs_to_stop("w1") == []


# -- finish, progress, stream ------------------------------------------------------------------


async def test_finish_once(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    done = await store.finish(job_id, output_json='{"a": 1}', error_json=None, now_ms=t0 + 7)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert done.output_json == '{"a": 1}' and done.finished_at_ms == t0 + 7
    assert done.execution_time_ms == 7
    assert done.expires_at_ms == t0 + 7 + RETENTION_RUN_MS
    assert await store.finish(job_id, output_json=None, error_json='"x"', now_ms=t0 + 8) is None
    assert (await store.get(EP, job_id)) == done


async def test_finish_with_error_fails_the_job(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    done = await store.finish(job_id, output_json=None, error_json='"boom"', now_ms=t0 + 1)
    assert done is not None and done.status is JobStatus.FAILED and done.error_json == '"boom"'
    assert done.status_object()["error"] == "boom"


async def test_finish_by_another_worker_is_ignored(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, worker="w1")
    assert (
        await store.finish(job_id, output_json="1", error_json=None, now_ms=t0, holder=Holder("w2"))
        is None
    )
    assert (await store.get(EP, job_id)).status is JobStatus.IN_PROGRESS  # type: ignore[union-attr]
    done = await store.finish(
        job_id, output_json="1", error_json=None, now_ms=t0, holder=Holder("w1")
    )
    assert done is not None and done.status is JobStatus.COMPLETED


async def test_a_take_fails_what_it_cannot_deliver_and_leases_the_rest(
    store: JobStore, t0: int
) -> None:
    """A record whose input is not strict JSON (written before inputs were checked, or by hand)
    must not be leased: its reply would fail, stranding every job taken with it."""
    good_a, _ = await store.submit(new("a"), t0)
    bad, _ = await store.submit(
        NewJob(EP, '{"x": 1e309}', webhook="https://example.com/hook"), t0 + 1
    )
    deep, _ = await store.submit(NewJob(EP, "[" * 150 + "]" * 150), t0 + 2)
    good_b, _ = await store.submit(new("b"), t0 + 3)
    version = store.notifier.version(end_topic(bad.id))
    taken = await store.take(EP, "w1", 4, t0 + 10, LEASE)
    assert [job.id for job in taken] == [good_a.id, good_b.id]
    for job_id in (bad.id, deep.id):
        failed = await store.get(EP, job_id)
        assert failed is not None and failed.status is JobStatus.FAILED
        assert failed.worker_id is None and failed.lease_expires_at_ms is None
        assert "cannot be sent to a worker" in json.loads(failed.error_json or "null")
    assert "x" in json.loads((await store.get(EP, bad.id)).error_json or "null")  # type: ignore[union-attr]
    assert store.notifier.version(end_topic(bad.id)) > version
    assert [d.job_id for d in await store.job_webhooks(bad.id)] == [bad.id]


async def test_a_zombie_attempt_changes_nothing(store: JobStore, t0: int) -> None:
    """w1's lease lapses and w2 runs the job again: w1's late writes are fenced out."""
    job_id = await running(store, t0, worker="w1")
    assert (await store.sweep(t0 + LEASE, LOST, 1)).requeued == [job_id]
    (again,) = await store.take(EP, "w2", 1, t0 + LEASE + 1, LEASE)
    assert again.id == job_id and again.retries == 1
    zombie, holder = Holder("w1"), Holder("w2")
    assert not await store.record_progress(job_id, '"stale"', t0 + LEASE + 2, zombie, LEASE)
    assert await store.append_stream(job_id, '"stale"', t0 + LEASE + 2, zombie, LEASE) is None
    done = await store.finish(
        job_id, output_json='"stale"', error_json=None, now_ms=t0 + LEASE + 3, holder=zombie
    )
    assert done is None
    job = await store.get(EP, job_id)
    assert job is not None and job.status is JobStatus.IN_PROGRESS and job.output_json is None
    assert job.lease_expires_at_ms == t0 + LEASE + 1 + LEASE  # the zombie renewed nothing
    assert await store.append_stream(job_id, '"fresh"', t0 + LEASE + 4, holder, LEASE) == 1
    done = await store.finish(
        job_id, output_json='"fresh"', error_json=None, now_ms=t0 + LEASE + 5, holder=holder
    )
    assert done is not None and done.output_json == '"fresh"'
    assert (await store.read_stream(EP, job_id, after_seq=0))[1] == [(1, '"fresh"')]  # type: ignore[index]


async def test_a_named_attempt_must_be_the_current_one(store: JobStore, t0: int) -> None:
    """The same worker can hold two attempts of a job in turn: the attempt number tells the
    late result of the first from the second."""
    job_id = await running(store, t0, worker="w1")
    await store.sweep(t0 + LEASE, LOST, 1)
    (again,) = await store.take(EP, "w1", 1, t0 + LEASE + 1, LEASE)
    assert again.retries == 1
    first, second = Holder("w1", attempt=0), Holder("w1", attempt=1)
    assert await store.append_stream(job_id, '"x"', t0 + LEASE + 2, first) is None
    assert not await store.record_progress(job_id, '"x"', t0 + LEASE + 2, first)
    assert (
        await store.finish(
            job_id, output_json="1", error_json=None, now_ms=t0 + LEASE + 3, holder=first
        )
        is None
    )
    done = await store.finish(
        job_id, output_json="2", error_json=None, now_ms=t0 + LEASE + 3, holder=second
    )
    assert done is not None and done.output_json == "2"


async def test_an_anonymous_take_is_held_under_its_alias(store: JobStore, t0: int) -> None:
    """A `$RUNPOD_POD_ID` take holds the job as `anon-<host>`; the worker's posts and pings
    come under its real id from that host, which passes the fence as the alias."""
    job_id = await running(store, t0, worker="anon-10-0-0-7")
    here, elsewhere = Holder("pod-1", alias="anon-10-0-0-7"), Holder("pod-2", alias="anon-x")
    assert await store.append_stream(job_id, '"c"', t0 + 1, elsewhere) is None
    await store.touch_worker(
        EP, "pod-1", t0 + 5_000, held_job_ids=[job_id], lease_ms=LEASE, alias="anon-10-0-0-7"
    )
    job = await store.get(EP, job_id)
    assert job is not None and job.lease_expires_at_ms == t0 + 5_000 + LEASE
    assert job.worker_id == "anon-10-0-0-7"  # stop signals still reach its job-stop poll
    assert await store.append_stream(job_id, '"c"', t0 + 6_000, here, LEASE) == 1
    done = await store.finish(job_id, output_json="1", error_json=None, now_ms=t0, holder=here)
    assert done is not None and done.status is JobStatus.COMPLETED


async def test_progress_and_chunks_renew_their_job_lease(store: JobStore, t0: int) -> None:
    a = await running(store, t0)
    b = await running(store, t0)
    assert await store.record_progress(a, '"p"', t0 + 5_000, Holder("w1"), LEASE)
    assert await store.append_stream(b, '"c"', t0 + 7_000, Holder("w1"), LEASE) == 1
    leases = {j: (await store.get(EP, j)).lease_expires_at_ms for j in (a, b)}  # type: ignore[union-attr]
    assert leases == {a: t0 + 5_000 + LEASE, b: t0 + 7_000 + LEASE}


async def test_finish_on_another_endpoint_is_ignored(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    assert (
        await store.finish(job_id, output_json="1", error_json=None, now_ms=t0, endpoint_id="x")
        is None
    )
    done = await store.finish(job_id, output_json="1", error_json=None, now_ms=t0, endpoint_id=EP)
    assert done is not None and done.status is JobStatus.COMPLETED


async def test_finish_of_a_queued_or_unknown_job_is_ignored(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(new(), t0)
    assert await store.finish(job.id, output_json="1", error_json=None, now_ms=t0) is None
    assert await store.finish("nope", output_json="1", error_json=None, now_ms=t0) is None
    assert (await store.get(EP, job.id)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]


async def test_progress_and_stream_only_while_running(store: JobStore, t0: int) -> None:
    queued, _ = await store.submit(new(endpoint="ep-q"), t0)
    assert not await store.record_progress(queued.id, '"p"', t0)
    assert await store.append_stream(queued.id, '"c"', t0) is None
    job_id = await running(store, t0)
    assert await store.record_progress(job_id, '{"pct": 50}', t0 + 1)
    assert (await store.get(EP, job_id)).output_json == '{"pct": 50}'  # type: ignore[union-attr]
    assert await store.append_stream(job_id, '"a"', t0 + 1) == 1
    assert await store.append_stream(job_id, '"b"', t0 + 1) == 2
    await store.finish(job_id, output_json='"done"', error_json=None, now_ms=t0 + 2)
    assert not await store.record_progress(job_id, '"late"', t0 + 3)
    assert await store.append_stream(job_id, '"late"', t0 + 3) is None
    job = await store.get(EP, job_id)
    assert job is not None and job.output_json == '"done"'
    result = await store.read_stream(EP, job_id, after_seq=0)
    assert result is not None and result[1] == [(1, '"a"'), (2, '"b"')]


async def test_consuming_read_versus_after_seq(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    for chunk in ('"a"', '"b"', '"c"'):
        await store.append_stream(job_id, chunk, t0)
    first = await store.read_stream(EP, job_id)
    assert first is not None
    job, chunks = first
    assert chunks == [(1, '"a"'), (2, '"b"'), (3, '"c"')] and job.stream_cursor == 3
    assert (await store.read_stream(EP, job_id)) is not None
    assert (await store.read_stream(EP, job_id))[1] == []  # type: ignore[index]
    await store.append_stream(job_id, '"d"', t0)
    # after_seq reads never move the cursor
    assert (await store.read_stream(EP, job_id, after_seq=1))[1] == [  # type: ignore[index]
        (2, '"b"'),
        (3, '"c"'),
        (4, '"d"'),
    ]
    assert (await store.read_stream(EP, job_id))[1] == [(4, '"d"')]  # type: ignore[index]
    assert (await store.read_stream(EP, job_id, after_seq=4))[1] == []  # type: ignore[index]
    assert await store.read_stream(EP, "unknown") is None
    assert await store.read_stream("ep-b", job_id) is None


# -- retry, purge, release ---------------------------------------------------------------------


async def test_retry_a_failed_job(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    await store.append_stream(job_id, '"old"', t0)
    await store.finish(job_id, output_json='"partial"', error_json='"boom"', now_ms=t0 + 1)
    version = store.notifier.version(queue_topic(EP))
    retried = await store.retry(EP, job_id, t0 + 2)
    assert retried is not None
    assert retried.status is JobStatus.IN_QUEUE and retried.retries == 1
    assert retried.output_json is None and retried.error_json is None
    assert retried.started_at_ms is None and retried.finished_at_ms is None
    assert retried.worker_id is None and retried.expires_at_ms is None
    assert store.notifier.version(queue_topic(EP)) > version
    (again,) = await store.take(EP, "w2", 1, t0 + 3, LEASE)
    assert again.id == job_id and again.retries == 1
    # the old attempt's stream is gone and new chunks keep counting up
    assert (await store.read_stream(EP, job_id))[1] == []  # type: ignore[index]
    assert await store.append_stream(job_id, '"new"', t0 + 4) == 2


@pytest.mark.parametrize("end", ["completed", "cancelled", "queued", "running"])
async def test_retry_refused_outside_failed_and_timed_out(
    store: JobStore, t0: int, end: str
) -> None:
    if end == "queued":
        job_id = (await store.submit(new(), t0))[0].id
    else:
        job_id = await running(store, t0)
        if end == "completed":
            await store.finish(job_id, output_json="1", error_json=None, now_ms=t0)
        elif end == "cancelled":
            await store.cancel(EP, job_id, t0)
    before = await store.get(EP, job_id)
    with pytest.raises(InvalidTransition) as info:
        await store.retry(EP, job_id, t0 + 1)
    assert info.value.operation == "retry"
    assert await store.get(EP, job_id) == before
    assert await store.retry(EP, "unknown", t0) is None


async def test_retry_a_timed_out_job(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(new(ttl_ms=10_000), t0)
    await store.sweep(t0 + 10_000, LOST, 1)
    assert (await store.get(EP, job.id)).status is JobStatus.TIMED_OUT  # type: ignore[union-attr]
    retried = await store.retry(EP, job.id, t0 + 10_001)
    assert retried is not None and retried.status is JobStatus.IN_QUEUE
    # its ttl counts again from the retry, so it can be taken
    assert [j.id for j in await store.take(EP, "w1", 1, t0 + 10_002, LEASE)] == [job.id]


async def test_purge_cancels_only_queued_jobs_of_the_endpoint(store: JobStore, t0: int) -> None:
    run_id = await running(store, t0)
    queued = [(await store.submit(new(i), t0))[0].id for i in range(3)]
    other, _ = await store.submit(new(endpoint="ep-b"), t0)
    assert await store.purge_queue(EP, t0 + 1) == 3
    for job_id in queued:
        assert (await store.get(EP, job_id)).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    assert (await store.get(EP, run_id)).status is JobStatus.IN_PROGRESS  # type: ignore[union-attr]
    assert (await store.get("ep-b", other.id)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]
    assert await store.purge_queue(EP, t0 + 2) == 0


async def test_release_puts_jobs_back_without_a_retry(store: JobStore, t0: int) -> None:
    a, _ = await store.submit(new(1), t0)
    b, _ = await store.submit(new(2), t0)
    await store.take(EP, "w1", 2, t0, LEASE)
    assert await store.release([a.id, b.id, "unknown"], "w2", t0) == 0
    assert await store.release([a.id, b.id], "w1", t0 + 1) == 2
    assert await store.release([], "w1", t0 + 1) == 0
    again = await store.take(EP, "w2", 2, t0 + 2, LEASE)
    assert sorted(j.id for j in again) == sorted([a.id, b.id])
    assert all(j.retries == 0 and j.worker_id == "w2" for j in again)


# -- sweeps ------------------------------------------------------------------------------------


async def test_ttl_expires_queued_jobs(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(new(ttl_ms=10_000), t0)
    assert (await store.sweep(t0 + 9_999, LOST, 1)).timed_out == []
    result = await store.sweep(t0 + 10_000, LOST, 1)
    assert result.timed_out == [job.id]
    timed_out = await store.get(EP, job.id)
    assert timed_out is not None and timed_out.status is JobStatus.TIMED_OUT
    assert not timed_out.stop_pending and timed_out.finished_at_ms == t0 + 10_000


async def test_execution_timeout_stops_running_job(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, execution_timeout_ms=5_000)
    await store.touch_worker(EP, "w1", t0 + 4_000, held_job_ids=[job_id], lease_ms=LEASE)
    assert (await store.sweep(t0 + 4_999, LOST, 1)).timed_out == []
    version = store.notifier.version(stop_topic("w1"))
    assert (await store.sweep(t0 + 5_000, LOST, 1)).timed_out == [job_id]
    job = await store.get(EP, job_id)
    assert job is not None and job.status is JobStatus.TIMED_OUT and job.stop_pending
    assert store.notifier.version(stop_topic("w1")) > version
    assert await store.jobs_to_stop("w1") == [job_id]
    assert await store.finish(job_id, output_json="1", error_json=None, now_ms=t0 + 5_001) is None
    assert await store.jobs_to_stop("w1") == []


async def test_ttl_also_bounds_a_running_job(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(new(ttl_ms=10_000), t0)
    assert len(await store.take(EP, "w1", 1, t0 + 5_000, LEASE)) == 1
    await store.touch_worker(EP, "w1", t0 + 9_000, held_job_ids=[job.id], lease_ms=LEASE)
    assert (await store.sweep(t0 + 9_999, LOST, 1)).timed_out == []
    assert (await store.sweep(t0 + 10_000, LOST, 1)).timed_out == [job.id]
    timed_out = await store.get(EP, job.id)
    assert timed_out is not None and timed_out.status is JobStatus.TIMED_OUT
    assert timed_out.stop_pending


async def test_lost_lease_requeues_then_fails(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, worker="w1")
    await store.append_stream(job_id, '"lost"', t0)
    # a renewed lease keeps the job
    await store.touch_worker(EP, "w1", t0 + 20_000, held_job_ids=[job_id], lease_ms=LEASE)
    assert (await store.sweep(t0 + LEASE, LOST, 1)).requeued == []
    result = await store.sweep(t0 + 20_000 + LEASE, LOST, 1)
    assert result.requeued == [job_id]
    job = await store.get(EP, job_id)
    assert job is not None and job.status is JobStatus.IN_QUEUE and job.retries == 1
    assert job.worker_id is None and job.started_at_ms is None
    assert (await store.read_stream(EP, job_id))[1] == []  # type: ignore[index]
    t1 = t0 + 100_000
    (again,) = await store.take(EP, "w2", 1, t1, LEASE)
    assert again.id == job_id
    result = await store.sweep(t1 + LEASE, LOST * 10, 1)
    assert result.failed_lost == [job_id] and result.requeued == []
    failed = await store.get(EP, job_id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert "worker lost" in json.loads(failed.error_json or "null")


async def test_lost_worker_is_removed_and_its_jobs_requeued(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, worker="w1")
    await store.touch_worker(EP, "w1", t0, lease_ms=10 * LOST)
    await store.touch_worker(EP, "w2", t0 + LOST)
    result = await store.sweep(t0 + LOST, LOST, 1)
    assert result.workers_lost == ["w1"] and result.requeued == [job_id]
    assert await store.worker("w1") is None
    assert await store.worker("w2") is not None


async def test_max_retries_zero_fails_at_once(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    result = await store.sweep(t0 + LEASE, LOST, 0)
    assert result.failed_lost == [job_id]


async def test_retention_expiry_hides_then_deletes(store: JobStore, t0: int) -> None:
    old = t0 - 2 * RETENTION_RUN_MS
    kept_id = await running(store, t0)
    gone_id = await running(store, old)
    await store.append_stream(gone_id, '"x"', old)
    await store.finish(gone_id, output_json="1", error_json=None, now_ms=old)
    await store.finish(kept_id, output_json="1", error_json=None, now_ms=t0)
    assert await store.get(EP, gone_id) is None  # expired, even before a sweep
    assert await store.read_stream(EP, gone_id, after_seq=0) is None
    assert (await store.health(EP, t0))["jobs"]["completed"] == 1
    result = await store.sweep(t0, LOST, 1)
    assert result.deleted == 1
    assert await store.get(EP, kept_id) is not None
    assert (await store.sweep(t0, LOST, 1)).deleted == 0


async def test_retention_per_kind_and_per_job(store: JobStore, t0: int) -> None:
    ids = {
        "run": await running(store, t0),
        "sync": await running(store, t0, sync=True),
        "own": await running(store, t0, retention_ms=1234),
    }
    expected = {"run": RETENTION_RUN_MS, "sync": RETENTION_SYNC_MS, "own": 1234}
    for kind, job_id in ids.items():
        job = await store.finish(job_id, output_json="1", error_json=None, now_ms=t0)
        assert job is not None and job.expires_at_ms == t0 + expected[kind], kind


async def test_shorten_retention_never_lengthens(store: JobStore, t0: int) -> None:
    done_id = await running(store, t0)
    await store.finish(done_id, output_json="1", error_json=None, now_ms=t0)
    live_id = await running(store, t0)
    assert await store.shorten_retention(EP, done_id, 5_000, t0)
    assert await store.shorten_retention(EP, live_id, 7_000, t0)
    # A longer ttl later changes neither.
    assert await store.shorten_retention(EP, done_id, 10 * RETENTION_RUN_MS, t0)
    assert await store.shorten_retention(EP, live_id, 10 * RETENTION_RUN_MS, t0)
    done = await store.get(EP, done_id)
    assert done is not None and done.expires_at_ms == t0 + 5_000
    live = await store.finish(live_id, output_json="1", error_json=None, now_ms=t0 + 100)
    assert live is not None and live.expires_at_ms == t0 + 100 + 7_000
    assert not await store.shorten_retention(EP, "no-such-job", 5_000, t0)
    assert not await store.shorten_retention("ep-other", done_id, 5_000, t0)


# -- webhooks ----------------------------------------------------------------------------------


async def test_webhook_rows_for_every_terminal_transition(store: JobStore, t0: int) -> None:
    hook = "http://hook.example/h"
    done = await running(store, t0, webhook=hook)
    await store.finish(done, output_json='"ok"', error_json=None, now_ms=t0 + 1)
    cancelled = (await store.submit(new(webhook=hook), t0))[0].id
    await store.cancel(EP, cancelled, t0 + 1)
    purged = (await store.submit(new(webhook=hook), t0))[0].id
    timed = (await store.submit(new(webhook=hook, ttl_ms=10_000), t0 - 10_000))[0].id
    await store.sweep(t0, LOST, 1)
    await store.purge_queue(EP, t0 + 1)
    await running(store, t0)  # no webhook: no row
    due = await store.due_webhooks(t0 + 1, 10)
    assert sorted(d.job_id for d in due) == sorted([done, cancelled, purged, timed])
    bodies = {d.job_id: json.loads(d.body_json) for d in due}
    assert bodies[done] == {
        "id": done,
        "status": "COMPLETED",
        "delayTime": 0,
        "executionTime": 1,
        "workerId": "w1",
        "output": "ok",
    }
    assert bodies[cancelled]["status"] == "CANCELLED"
    assert bodies[purged]["status"] == "CANCELLED"
    assert bodies[timed]["status"] == "TIMED_OUT"
    assert all(d.url == hook and d.attempts == 0 for d in due)


async def test_webhook_claim_reschedule_and_delete(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, webhook="http://hook.example/h")
    await store.finish(job_id, output_json="1", error_json=None, now_ms=t0)
    assert await store.due_webhooks(t0 - 1, 10) == []
    (delivery,) = await store.due_webhooks(t0, 10)
    # claimed: nobody else gets it meanwhile
    assert await store.due_webhooks(t0 + 1, 10) == []
    await store.webhook_attempted(
        delivery.id, ok=False, now_ms=t0 + 2, next_attempt_at_ms=t0 + 10_000
    )
    assert await store.due_webhooks(t0 + 9_999, 10) == []
    (again,) = await store.due_webhooks(t0 + 10_000, 10)
    assert again.id == delivery.id and again.attempts == 1
    await store.webhook_attempted(again.id, ok=True, now_ms=t0 + 10_001, next_attempt_at_ms=None)
    assert await store.due_webhooks(t0 + 10**9, 10) == []


async def test_webhook_given_up_is_deleted(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, webhook="http://hook.example/h")
    await store.cancel(EP, job_id, t0)
    (delivery,) = await store.due_webhooks(t0, 10)
    await store.webhook_attempted(delivery.id, ok=False, now_ms=t0, next_attempt_at_ms=None)
    assert await store.due_webhooks(t0 + 10**9, 10) == []


async def test_webhook_claims_respect_limit(store: JobStore, t0: int) -> None:
    for _ in range(3):
        await store.cancel(EP, (await store.submit(new(webhook="http://h/"), t0))[0].id, t0)
    assert len(await store.due_webhooks(t0, 2)) == 2
    assert len(await store.due_webhooks(t0, 2)) == 1


# -- workers and health ------------------------------------------------------------------------


async def test_touch_worker_states(store: JobStore, t0: int) -> None:
    await store.touch_worker(EP, "w1", t0)
    info = await store.worker("w1")
    assert info is not None and info.state == "ready" and info.last_seen_ms == t0
    assert info.endpoint_id == EP and info.held_job_ids == ()
    await store.touch_worker(EP, "w1", t0 + 1, state="unhealthy")
    await store.touch_worker(EP, "w1", t0 + 2)
    info = await store.worker("w1")
    assert info is not None and info.state == "unhealthy" and info.last_seen_ms == t0 + 2
    assert await store.worker("nobody") is None


async def test_touch_worker_renews_only_listed_jobs(store: JobStore, t0: int) -> None:
    a = await running(store, t0)
    b = await running(store, t0)
    await store.touch_worker(EP, "w1", t0 + 10_000, held_job_ids=[a], lease_ms=LEASE)
    leases = {j: (await store.get(EP, j)).lease_expires_at_ms for j in (a, b)}  # type: ignore[union-attr]
    assert leases == {a: t0 + 10_000 + LEASE, b: t0 + LEASE}
    # contact without a list (a take, a stop poll) renews no lease at all
    await store.touch_worker(EP, "w1", t0 + 20_000, lease_ms=LEASE)
    leases = {j: (await store.get(EP, j)).lease_expires_at_ms for j in (a, b)}  # type: ignore[union-attr]
    assert leases == {a: t0 + 10_000 + LEASE, b: t0 + LEASE}
    # nor does another worker's list naming them
    await store.touch_worker(EP, "w2", t0 + 20_000, held_job_ids=[a, b], lease_ms=LEASE)
    leases = {j: (await store.get(EP, j)).lease_expires_at_ms for j in (a, b)}  # type: ignore[union-attr]
    assert leases == {a: t0 + 10_000 + LEASE, b: t0 + LEASE}
    info = await store.worker("w1")
    assert info is not None and sorted(info.held_job_ids) == sorted([a, b])


async def test_health_counts(store: JobStore, t0: int) -> None:
    empty = await store.health(EP, t0)
    assert empty == {
        "jobs": {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0},
        "workers": {
            "idle": 0,
            "initializing": 0,
            "ready": 0,
            "running": 0,
            "throttled": 0,
            "unhealthy": 0,
        },
    }
    for name in ("busy", "idle", "sick", "leaving"):
        await store.touch_worker(EP, name, t0)
    await store.touch_worker(EP, "sick", t0, state="unhealthy")
    await store.touch_worker(EP, "leaving", t0, state="recycling")
    await store.touch_worker("ep-b", "elsewhere", t0)
    done = await running(store, t0, worker="busy")
    await store.finish(done, output_json="1", error_json=None, now_ms=t0)
    failed = await running(store, t0, worker="busy")
    await store.finish(failed, output_json=None, error_json='"x"', now_ms=t0)
    await store.retry(EP, failed, t0)
    failed_again = (await store.take(EP, "busy", 1, t0, LEASE))[0].id
    await store.finish(failed_again, output_json=None, error_json='"x"', now_ms=t0)
    await running(store, t0, worker="busy")
    await store.submit(new(), t0)
    await store.submit(new(), t0)
    health = await store.health(EP, t0)
    assert health["jobs"] == {
        "completed": 1,
        "failed": 1,
        "inProgress": 1,
        "inQueue": 2,
        "retried": 1,
    }
    assert health["workers"] == {
        "idle": 1,
        "initializing": 0,
        "ready": 1,
        "running": 1,
        "throttled": 0,
        "unhealthy": 1,
    }


async def test_notifier_topics(store: JobStore, t0: int) -> None:
    n = store.notifier
    job, _ = await store.submit(new(), t0)
    jt, qt = job_topic(job.id), queue_topic(EP)
    assert n.version(jt) == 1 and n.version(qt) == 1
    await store.take(EP, "w1", 1, t0, LEASE)
    assert n.version(jt) == 2
    await store.append_stream(job.id, '"c"', t0)
    assert n.version(jt) == 3
    await store.record_progress(job.id, '"p"', t0)
    assert n.version(jt) == 4
    await store.finish(job.id, output_json="1", error_json=None, now_ms=t0)
    assert n.version(jt) == 5
    await store.finish(job.id, output_json="1", error_json=None, now_ms=t0)
    assert n.version(jt) == 5  # nothing changed, nothing published
    assert n.version(qt) == 1
    assert n.version(stop_topic("w1")) == 0


async def test_end_topic_moves_only_on_terminal_transitions(store: JobStore, t0: int) -> None:
    """runsync and status-sync sleep on it, so the steps before the end must not wake them."""
    n = store.notifier
    finished, _ = await store.submit(new(), t0)
    await store.take(EP, "w1", 1, t0, LEASE)
    await store.record_progress(finished.id, '"p"', t0)
    await store.append_stream(finished.id, '"c"', t0)
    assert n.version(end_topic(finished.id)) == 0
    await store.finish(finished.id, output_json="1", error_json=None, now_ms=t0)
    assert n.version(end_topic(finished.id)) == 1

    cancelled, _ = await store.submit(new(), t0)
    await store.cancel(EP, cancelled.id, t0)
    purged, _ = await store.submit(new(), t0)
    await store.purge_queue(EP, t0)
    expired, _ = await store.submit(new(ttl_ms=10_000), t0)
    await store.sweep(t0 + 20_000, worker_lost_ms=10**9, max_retries=3)
    for job in (cancelled, purged, expired):
        assert n.version(end_topic(job.id)) == 1, job


# -- events ------------------------------------------------------------------------------------


async def test_every_committed_change_is_told_once_as_an_event(store: JobStore, t0: int) -> None:
    seen: list[events.StoreEvent] = []
    store.events.subscribe(seen.append)

    def drain() -> list[events.StoreEvent]:
        told = list(seen)
        seen.clear()
        return told

    job, _ = await store.submit(new(webhook="http://hook.example/x"), t0, "key-1")
    assert drain() == [events.JobSubmitted(job)]
    await store.submit(new(), t0, "key-1")  # an idempotent repeat creates nothing
    assert drain() == []
    (taken,) = await store.take(EP, "w1", 1, t0 + 1, LEASE)
    assert drain() == [events.JobsTaken((taken,))]
    assert await store.release([job.id], "w1", t0 + 2) == 1
    assert drain() == [events.JobsRequeued((job.id,), lost=False)]
    await store.take(EP, "w1", 1, t0 + 3, LEASE)
    drain()
    result = await store.sweep(t0 + 3 + LEASE, LOST, 1)
    assert result.requeued == [job.id]
    assert drain() == [events.JobsRequeued((job.id,), lost=True)]
    await store.take(EP, "w2", 1, t0 + LEASE + 10, LEASE)
    drain()
    done = await store.finish(
        job.id, output_json=None, error_json='"e"', now_ms=t0 + LEASE + 11, holder=Holder("w2")
    )
    assert done is not None and drain() == [events.JobsEnded((done,))]
    assert await store.finish(job.id, output_json="1", error_json=None, now_ms=t0) is None
    assert drain() == []  # nothing changed, nothing told
    retried = await store.retry(EP, job.id, t0 + LEASE + 12)
    assert retried is not None and drain() == [events.JobRetried(retried)]
    cancelled = await store.cancel(EP, job.id, t0 + LEASE + 13)
    assert cancelled is not None and drain() == [events.JobsEnded((cancelled,))]
    await store.cancel(EP, job.id, t0 + LEASE + 14)
    assert drain() == []
    # two webhook rows now (FAILED, then CANCELLED): one fails twice then gives up
    first, second = await store.due_webhooks(t0 + LEASE + 20, 10)
    now = t0 + LEASE + 21
    await store.webhook_attempted(first.id, ok=False, now_ms=now, next_attempt_at_ms=now)
    (again,) = await store.due_webhooks(now, 10)
    await store.webhook_attempted(again.id, ok=False, now_ms=now + 1, next_attempt_at_ms=None)
    await store.webhook_attempted(second.id, ok=True, now_ms=now + 2, next_attempt_at_ms=None)
    assert drain() == [
        events.WebhookAttempted(job.id, 1, False, False, now),
        events.WebhookAttempted(job.id, 2, False, True, now + 1),
        events.WebhookAttempted(job.id, 1, True, True, now + 2),
    ]


async def test_a_failing_listener_never_fails_the_operation(store: JobStore, t0: int) -> None:
    told: list[events.StoreEvent] = []

    def broken(event: events.StoreEvent) -> None:
        raise RuntimeError("listener bug")

    store.events.subscribe(broken)
    store.events.subscribe(told.append)
    job, created = await store.submit(new(), t0)
    assert created and told == [events.JobSubmitted(job)]
    assert await store.get(EP, job.id) is not None


# -- endpoints ---------------------------------------------------------------------------------


async def test_endpoint_settings_round_trip_and_replace(store: JobStore, t0: int) -> None:
    assert await store.get_endpoint("gen") is None and await store.list_endpoints() == []
    config = EndpointConfig.from_wire(
        "gen",
        {
            "handler": "neuroq.handler:handler",
            "workersMax": 4,
            "scalerType": "REQUEST_COUNT",
            "scalerValue": 2,
            "executionTimeout": 60_000,
            "env": {"NEUROQ_TORCH_THREADS": "1"},
        },
    )
    stored = await store.put_endpoint(config, t0)
    assert stored == replace(config, created_at_ms=t0, updated_at_ms=t0)
    assert await store.get_endpoint("gen") == stored
    changed = await store.put_endpoint(stored.updated({"workersMin": 1}), t0 + 5)
    assert (changed.workers_min, changed.created_at_ms, changed.updated_at_ms) == (1, t0, t0 + 5)
    await store.put_endpoint(EndpointConfig("alpha", command=("python", "w.py")), t0)
    assert [e.endpoint_id for e in await store.list_endpoints()] == ["alpha", "gen"]
    assert await store.delete_endpoint("gen") and not await store.delete_endpoint("gen")
    assert await store.get_endpoint("gen") is None


async def test_queue_stats_count_live_jobs_only(store: JobStore, t0: int) -> None:
    assert await store.queue_stats() == {}
    await running(store, t0)
    await store.submit(new(), t0 + 10)
    await store.submit(new(), t0 + 20)
    done = await running(store, t0, endpoint="ep-b")
    await store.finish(done, output_json="1", error_json=None, now_ms=t0 + 30)
    await store.submit(new(endpoint="ep-b"), t0 + 40)
    stats = await store.queue_stats()
    assert stats == {
        EP: QueueStats(queued=2, running=1, oldest_queued_at_ms=t0 + 10),
        "ep-b": QueueStats(queued=1, running=0, oldest_queued_at_ms=t0 + 40),
    }
