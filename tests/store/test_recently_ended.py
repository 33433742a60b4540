"""What a long-poll needs to answer without reading the job back: the output topic (progress or
the end, not the take) and `recently_ended` (the job as this process ended it, until anything
changes it), on both stores."""

from __future__ import annotations

from neuroq.jobs import JobStatus, NewJob
from neuroq.store.base import Holder, JobStore, PostedResult, output_topic

EP = "ep-ended"
LEASE = 60_000


async def test_output_topic_moves_on_progress_and_the_end_only(store: JobStore, t0: int) -> None:
    n = store.notifier
    job, _ = await store.submit(NewJob(EP, "1"), t0)
    await store.take(EP, "w1", 1, t0, LEASE)
    await store.append_stream(job.id, '"c"', t0)
    assert n.version(output_topic(job.id)) == 0
    await store.record_progress(job.id, '"p"', t0)
    assert n.version(output_topic(job.id)) == 1
    await store.finish(job.id, output_json="1", error_json=None, now_ms=t0)
    assert n.version(output_topic(job.id)) == 2


async def test_recently_ended_is_the_job_as_it_ended(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(NewJob(EP, "1"), t0)
    mark = store.ended_mark()
    assert store.recently_ended(EP, job.id, mark) is None
    await store.take(EP, "w1", 1, t0, LEASE)
    ended = await store.finish(
        job.id, output_json=None, error_json='"boom"', now_ms=t0 + 1, holder=Holder("w1")
    )
    assert ended is not None
    assert store.recently_ended(EP, job.id, mark) == ended == await store.get(EP, job.id)
    assert store.recently_ended("another-endpoint", job.id, mark) is None
    # Not for a caller that read the job after it ended: its read may be newer (a retry in
    # another server whose NOTIFY is still on its way).
    assert store.recently_ended(EP, job.id, store.ended_mark()) is None
    # A retry changes the job: from then on only the store knows it.
    retried = await store.retry(EP, job.id, t0 + 2)
    assert retried is not None and retried.status is JobStatus.IN_QUEUE
    assert store.recently_ended(EP, job.id, mark) is None


async def test_batches_and_cancels_are_remembered_too(store: JobStore, t0: int) -> None:
    a, _ = await store.submit(NewJob(EP, "1"), t0)
    b, _ = await store.submit(NewJob(EP, "2"), t0)
    mark = store.ended_mark()
    cancelled = await store.cancel(EP, a.id, t0 + 1)
    assert cancelled is not None and store.recently_ended(EP, a.id, mark) == cancelled
    await store.take(EP, "w1", 1, t0, LEASE)
    (done,) = await store.finish_many(
        [PostedResult(b.id, '"ok"', None, Holder("w1"))], now_ms=t0 + 2, endpoint_id=EP
    )
    assert done is not None and store.recently_ended(EP, b.id, mark) == done


async def test_recently_submitted_is_the_job_as_queued_until_its_output_moves(
    store: JobStore, t0: int
) -> None:
    n = store.notifier
    job, created = await store.submit(NewJob(EP, "1"), t0, "key-1")
    assert created
    version = n.version(output_topic(job.id))
    assert store.recently_submitted(EP, job.id, version) == job == await store.get(EP, job.id)
    assert store.recently_submitted("another-endpoint", job.id, version) is None
    # An idempotent repeat queues nothing new, and the take does not move the output topic.
    again, created = await store.submit(NewJob(EP, "2"), t0, "key-1")
    assert not created and again.id == job.id
    await store.take(EP, "w1", 1, t0, LEASE)
    assert store.recently_submitted(EP, job.id, n.version(output_topic(job.id))) == job
    # Progress (or the end) moves it: from then on the store is read.
    await store.record_progress(job.id, '"p"', t0)
    assert store.recently_submitted(EP, job.id, n.version(output_topic(job.id))) is None
    assert store.recently_submitted(EP, "unknown", 0) is None


async def test_a_large_input_is_not_kept(store: JobStore, t0: int) -> None:
    job, _ = await store.submit(NewJob(EP, '"' + "x" * 20_000 + '"'), t0)
    assert (
        store.recently_submitted(EP, job.id, store.notifier.version(output_topic(job.id))) is None
    )
