"""Every store operation written once, as a transaction script that both SQL stores run.

An operation is a generator: it yields `Stmt(name, params)` for each statement, receives the rows
(an empty list for statements that return none) and finally returns an `Outcome` holding the
method's result, the notifier topics to publish and the events (neuroq.store.events) to emit once
the transaction has committed. The store
wraps the whole script in one transaction (SQLite `BEGIN IMMEDIATE`, a PostgreSQL transaction),
so the checks of a starting state made here and the changes that follow are atomic; a statement
marked `commit` is where the hot paths (a take, a result) let PostgreSQL end it early. Keeping the
logic free of I/O is what lets SQLite run it on its own thread and PostgreSQL run it on asyncio
without a second copy of the job lifecycle.
"""

from __future__ import annotations

import json
from collections.abc import Generator
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import Job, JobStatus, NewJob, new_job_id
from neuroq.store import events
from neuroq.store.base import (
    RECYCLING,
    TRUNCATED_LEVEL,
    FinishedMinute,
    Holder,
    InvalidTransition,
    LogLimits,
    LogLine,
    PostedResult,
    QueueStats,
    SweepResult,
    TakeLook,
    WebhookDelivery,
    WorkerInfo,
    ended_topics,
    job_topic,
    output_topic,
    queue_topic,
    stop_topic,
)
from neuroq.store.sql import job_from_row

T = TypeVar("T")
Rows = list[tuple[Any, ...]]

TTL_ERROR = json.dumps("job timed out: its ttl ran out")
EXECUTION_ERROR = json.dumps("job timed out: its executionTimeout ran out")
#: the retry count goes between the two halves, inside the JSON string
LOST_PREFIX = '"worker lost: its lease expired after '
LOST_SUFFIX = ' retries"'
#: most expired records one sweep deletes, so one sweep never holds the write lock for long
SWEEP_DELETE_LIMIT = 10_000
#: how long a claimed webhook delivery is reserved for its sender (longer than any POST takes)
WEBHOOK_CLAIM_MS = 60_000


@dataclass(frozen=True)
class Stmt:
    """One statement of an operation, named as in queries.sql.

    `before` are statements whose rows the operation does not need, run just ahead of this
    one (PostgreSQL sends them in the same round trip). `commit` says the transaction may end
    with this statement: whatever the operation yields after it may run as a transaction of
    its own, already committed should that one fail. PostgreSQL then runs a script that stops
    there (the common case it is set for) as one round trip, with no BEGIN or COMMIT; SQLite
    keeps the whole script in one transaction all the same."""

    name: str
    params: dict[str, Any]
    before: tuple[Stmt, ...] = ()
    commit: bool = False


@dataclass
class Outcome(Generic[T]):
    value: T
    topics: set[str] = field(default_factory=set)
    events: list[events.StoreEvent] = field(default_factory=list)


Op = Generator[Stmt, Rows, Outcome[T]]


def _terminal(rows: Rows, now_ms: int) -> Generator[Stmt, Rows, list[Job]]:
    """Jobs just made terminal: queue their webhooks in the same transaction."""
    jobs = [job_from_row(row) for row in rows]
    for job in jobs:
        if job.webhook is not None:
            body = json.dumps(job.status_object(), separators=(",", ":"))
            yield Stmt(
                "outbox_insert",
                {"job_id": job.id, "url": job.webhook, "body_json": body, "now": now_ms},
            )
    return jobs


# -- clients ---------------------------------------------------------------------------------


def submit(new: NewJob, now_ms: int, key: str | None) -> Op[tuple[Job, bool]]:
    by_key = {"endpoint_id": new.endpoint_id, "key": key}
    if key is not None:
        rows = yield Stmt("find_by_key", by_key)
        if rows:
            old = job_from_row(rows[0])
            if old.expires_at_ms is None or old.expires_at_ms > now_ms:
                return Outcome((old, False))
            # the key's holder is past retention: it no longer reserves the key
            yield Stmt("delete_job", {"id": old.id})
    inserted = yield from insert_new(new, now_ms, key)
    if inserted.value is None:
        # Another transaction committed the same key after our look-up (PostgreSQL only;
        # SQLite writers are serialised): theirs is the job.
        rows = yield Stmt("find_by_key", by_key)
        return Outcome((job_from_row(rows[0]), False))
    return Outcome((inserted.value, True), inserted.topics, inserted.events)


def insert_new(new: NewJob, now_ms: int, key: str | None) -> Op[Job | None]:
    """The submit's INSERT alone: the new job, or None when `key` is already held on the
    endpoint. One statement, so a keyed submit whose key is new (nearly all: clients send a
    fresh key per job) is one round trip; only a held key runs the whole `submit`."""
    job_id = new.id or new_job_id(new.sync)
    params = {
        "id": job_id,
        "endpoint_id": new.endpoint_id,
        "input_json": new.input_json,
        "execution_timeout_ms": new.policy.execution_timeout_ms,
        "timeout_explicit": new.policy.execution_timeout_explicit,
        "ttl_ms": new.policy.ttl_ms,
        "low_priority": new.policy.low_priority,
        "webhook": new.webhook,
        "s3_config_json": new.s3_config_json,
        "sync": new.sync,
        "retention_ms": new.retention_ms,
        "key": key,
        "now": now_ms,
    }
    topics = {job_topic(job_id), queue_topic(new.endpoint_id)}
    rows = yield Stmt("insert_job", params)
    if not rows:
        return Outcome(None)
    job = job_from_row(rows[0])
    return Outcome(job, topics, [events.JobSubmitted(job)])


def insert_many(news: list[tuple[NewJob, int, str | None]]) -> Op[list[Job | None]]:
    """`insert_new` for several submits, (job, now, key) each, in one statement (PostgreSQL
    only: `insert_jobs` unpacks one array per column); None for each whose key was held."""
    ids = [new.id or new_job_id(new.sync) for new, _, _ in news]
    params = {
        "ids": ids,
        "endpoint_ids": [new.endpoint_id for new, _, _ in news],
        "input_jsons": [new.input_json for new, _, _ in news],
        "execution_timeouts_ms": [new.policy.execution_timeout_ms for new, _, _ in news],
        "timeouts_explicit": [new.policy.execution_timeout_explicit for new, _, _ in news],
        "ttls_ms": [new.policy.ttl_ms for new, _, _ in news],
        "low_priorities": [new.policy.low_priority for new, _, _ in news],
        "webhooks": [new.webhook for new, _, _ in news],
        "s3_config_jsons": [new.s3_config_json for new, _, _ in news],
        "syncs": [new.sync for new, _, _ in news],
        "retentions_ms": [new.retention_ms for new, _, _ in news],
        "keys": [key for _, _, key in news],
        "nows": [now for _, now, _ in news],
    }
    rows = yield Stmt("insert_jobs", params)
    by_id = {job.id: job for job in map(job_from_row, rows)}
    inserted = [by_id.get(job_id) for job_id in ids]
    topics: set[str] = set()
    changes: list[events.StoreEvent] = []
    for job in inserted:
        if job is not None:
            topics |= {job_topic(job.id), queue_topic(job.endpoint_id)}
            changes.append(events.JobSubmitted(job))
    return Outcome(inserted, topics, changes)


def get(endpoint_id: str, job_id: str, now_ms: int) -> Op[Job | None]:
    rows = yield Stmt("get", {"id": job_id, "endpoint_id": endpoint_id, "now": now_ms})
    return Outcome(job_from_row(rows[0]) if rows else None)


def cancel(endpoint_id: str, job_id: str, now_ms: int) -> Op[Job | None]:
    params = {"id": job_id, "endpoint_id": endpoint_id, "now": now_ms}
    rows = yield Stmt("cancel", params)
    if rows:
        (job,) = yield from _terminal(rows, now_ms)
        topics = set(ended_topics(job.id))
        if job.stop_pending and job.worker_id is not None:
            topics.add(stop_topic(job.worker_id))
        return Outcome(job, topics, [events.JobsEnded((job,))])
    rows = yield Stmt("get", params)
    return Outcome(job_from_row(rows[0]) if rows else None)


def shorten_retention(endpoint_id: str, job_id: str, ttl_ms: int, now_ms: int) -> Op[bool]:
    params = {"id": job_id, "endpoint_id": endpoint_id, "now": now_ms}
    rows = yield Stmt("shorten_retention", {**params, "until": now_ms + ttl_ms, "ttl": ttl_ms})
    return Outcome(bool(rows), {job_topic(job_id)} if rows else set())


def retry(endpoint_id: str, job_id: str, now_ms: int) -> Op[Job | None]:
    params = {"id": job_id, "endpoint_id": endpoint_id, "now": now_ms}
    rows = yield Stmt("retry", params)
    if rows:
        job = job_from_row(rows[0])
        yield Stmt("delete_chunks", {"id": job.id})
        topics = {job_topic(job.id), queue_topic(job.endpoint_id)}
        return Outcome(job, topics, [events.JobRetried(job)])
    rows = yield Stmt("get", params)
    if not rows:
        return Outcome(None)
    raise InvalidTransition(job_from_row(rows[0]), "retry")


def purge_queue(endpoint_id: str, now_ms: int) -> Op[int]:
    rows = yield Stmt("purge", {"endpoint_id": endpoint_id, "now": now_ms})
    jobs = yield from _terminal(rows, now_ms)
    topics = {topic for job in jobs for topic in ended_topics(job.id)}
    return Outcome(len(jobs), topics, [events.JobsEnded(tuple(jobs))] if jobs else [])


def read_stream(
    endpoint_id: str, job_id: str, after_seq: int | None, now_ms: int
) -> Op[tuple[Job, list[tuple[int, str]]] | None]:
    consuming = after_seq is None
    params = {"id": job_id, "endpoint_id": endpoint_id, "now": now_ms}
    rows = yield Stmt("get_locked" if consuming else "get", params)
    if not rows:
        return Outcome(None)
    job = job_from_row(rows[0])
    after = job.stream_cursor if after_seq is None else after_seq
    chunk_rows = yield Stmt("chunks_after", {"id": job_id, "after": after})
    chunks = [(int(seq), str(chunk)) for seq, chunk in chunk_rows]
    if consuming and chunks:
        cursor = chunks[-1][0]
        yield Stmt("set_cursor", {"id": job_id, "cursor": cursor})
        job = replace(job, stream_cursor=cursor)
    return Outcome((job, chunks))


def read_logs(
    endpoint_id: str, job_id: str, after_seq: int, limit: int, now_ms: int
) -> Op[tuple[Job, list[LogLine], bool] | None]:
    rows = yield Stmt("get", {"id": job_id, "endpoint_id": endpoint_id, "now": now_ms})
    if not rows:
        return Outcome(None)
    job = job_from_row(rows[0])
    found = yield Stmt("logs_after", {"id": job_id, "after": after_seq, "limit": limit})
    lines = [LogLine(int(a), int(b), int(c), str(d), str(e)) for a, b, c, d, e in found]
    marked = yield Stmt("logs_truncated", {"id": job_id, "truncated": TRUNCATED_LEVEL})
    return Outcome((job, lines, bool(marked[0][0])))


_HEALTH_KEYS = {
    JobStatus.COMPLETED.value: "completed",
    JobStatus.FAILED.value: "failed",
    JobStatus.IN_PROGRESS.value: "inProgress",
    JobStatus.IN_QUEUE.value: "inQueue",
}


def health(endpoint_id: str, now_ms: int) -> Op[dict[str, dict[str, int]]]:
    jobs = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 0, "retried": 0}
    for status, count, retried in (
        yield Stmt("health_jobs", {"endpoint_id": endpoint_id, "now": now_ms})
    ):
        if status in _HEALTH_KEYS:
            jobs[_HEALTH_KEYS[status]] = int(count)
        jobs["retried"] += int(retried or 0)
    workers = dict.fromkeys(
        ("idle", "initializing", "ready", "running", "throttled", "unhealthy"), 0
    )
    for state, holding in (yield Stmt("health_workers", {"endpoint_id": endpoint_id})):
        if state == "unhealthy":
            workers["unhealthy"] += 1
        elif holding:
            workers["running"] += 1
        elif state == "ready":
            workers["idle"] += 1
            workers["ready"] += 1
        elif state == "initializing":
            workers["initializing"] += 1
        # an idle "recycling" worker is on its way out: counted nowhere
    return Outcome({"jobs": jobs, "workers": workers})


# -- workers ---------------------------------------------------------------------------------


def take(
    endpoint_id: str,
    worker_id: str,
    limit: int,
    now_ms: int,
    lease_ms: int,
    before: tuple[Stmt, ...] = (),
) -> Op[list[Job]]:
    params = {
        "endpoint_id": endpoint_id,
        "worker_id": worker_id,
        "limit": limit,
        "now": now_ms,
        "lease_until": now_ms + lease_ms,
    }
    rows = yield Stmt("take", params, before=before, commit=True)
    # RETURNING gives no order: restore the take order (priority, then seq)
    rows.sort(key=lambda row: (bool(row[6]), row[-1]))
    jobs: list[Job] = []
    ended: list[Job] = []
    topics: set[str] = set()
    for job in map(job_from_row, rows):
        topics.add(job_topic(job.id))
        problem = job.undeliverable()
        if problem is None:
            jobs.append(job)
            continue
        # Never deliver what cannot be sent: the reply would fail for every job in it, and the
        # worker would never see any of them. Fail this one (on PostgreSQL in a transaction
        # after the take's: were the server to stop in between, the lease would run out and
        # the next take would fail it).
        error = json.dumps(f"the stored job cannot be sent to a worker: {problem}")
        failed = yield Stmt(
            "fail_undeliverable", {"id": job.id, "error_json": error, "now": now_ms}
        )
        ended.extend((yield from _terminal(failed, now_ms)))
        topics.update(ended_topics(job.id))
    changes: list[events.StoreEvent] = [events.JobsTaken(tuple(jobs))] if jobs else []
    if ended:
        changes.append(events.JobsEnded(tuple(ended)))
    return Outcome(jobs, topics, changes)


def worker_take(look: TakeLook) -> Op[tuple[bool, list[Job]]]:
    """The contact (first look) goes with the take, and the take itself passes over a
    recycling worker, so a look that finds jobs is one statement, and one round trip on
    PostgreSQL; the worker's state is read only when nothing was taken."""
    contact = _contact(look) if look.touch else ()
    topics: set[str] = set()
    changes: list[events.StoreEvent] = []
    if look.limit > 0:
        taken = yield from take(
            look.endpoint_id, look.worker_id, look.limit, look.now_ms, look.lease_ms, contact
        )
        if taken.value:
            return Outcome((False, taken.value), taken.topics, taken.events)
        topics, changes = taken.topics, taken.events
    elif contact:
        yield replace(contact[-1], before=contact[:-1])
    rows = yield Stmt("worker_state", {"worker_id": look.worker_id})
    return Outcome((bool(rows) and rows[0][0] == RECYCLING, []), topics, changes)


def _contact(look: TakeLook) -> tuple[Stmt, ...]:
    """`touch_worker` for a take's first look: no state given, no lease renewed."""
    touch = Stmt(
        "touch_worker",
        {
            "worker_id": look.worker_id,
            "endpoint_id": look.endpoint_id,
            "state": None,
            "now": look.now_ms,
        },
    )
    if look.held_job_ids is None:
        return (touch,)
    unlisted = {"worker_id": look.worker_id, "ids": look.held_job_ids}
    return touch, Stmt("let_go_unlisted", unlisted)


def release(job_ids: list[str], worker_id: str) -> Op[int]:
    rows = yield Stmt("release", {"ids": job_ids, "worker_id": worker_id})
    topics = {job_topic(job_id) for job_id, _ in rows} | {queue_topic(ep) for _, ep in rows}
    released = tuple(job_id for job_id, _ in rows)
    return Outcome(len(rows), topics, [events.JobsRequeued(released, lost=False)] if rows else [])


def _fence(holder: Holder | None) -> dict[str, Any]:
    """The parameters of the `{held}` fence; no holder lets any write through."""
    if holder is None:
        return {"worker_id": None, "alias": None, "attempt": None}
    return {"worker_id": holder.worker_id, "alias": holder.alias, "attempt": holder.attempt}


def _lease_until(now_ms: int, lease_ms: int | None) -> int | None:
    return None if lease_ms is None else now_ms + lease_ms


def record_progress(
    job_id: str, output_json: str, now_ms: int, holder: Holder | None, lease_ms: int | None
) -> Op[bool]:
    params = {"id": job_id, "output_json": output_json, **_fence(holder)}
    rows = yield Stmt("progress", {**params, "lease_until": _lease_until(now_ms, lease_ms)})
    return Outcome(bool(rows), {job_topic(job_id), output_topic(job_id)} if rows else set())


def append_stream(
    job_id: str, chunk_json: str, now_ms: int, holder: Holder | None, lease_ms: int | None
) -> Op[int | None]:
    params = {"id": job_id, "lease_until": _lease_until(now_ms, lease_ms), **_fence(holder)}
    rows = yield Stmt("stream_next", params)
    if not rows:
        return Outcome(None)
    seq = int(rows[0][0])
    yield Stmt("stream_insert", {"id": job_id, "seq": seq, "chunk_json": chunk_json})
    return Outcome(seq, {job_topic(job_id)})


def clip_line(line: str, limit: int) -> str:
    """A log line cut to `limit` characters, saying how much was cut; NUL characters (which
    PostgreSQL text cannot hold) become U+FFFD, so both stores keep the same text."""
    line = line.replace("\x00", "\ufffd")
    if len(line) <= limit:
        return line
    # the note is sized for the longest count it can show, so the result never passes `limit`
    keep = max(0, limit - len(f" ... ({len(line)} characters cut)"))
    return f"{line[:keep]} ... ({len(line) - keep} characters cut)"


def append_logs(
    job_id: str,
    lines: list[tuple[int, str, str]],
    now_ms: int,
    holder: Holder | None,
    truncated: bool,
    limits: LogLimits,
    late_ms: int,
    lease_ms: int | None,
) -> Op[int | None]:
    fence = {
        "id": job_id,
        "late_since": now_ms - late_ms,
        "lease_until": _lease_until(now_ms, lease_ms),
        **_fence(holder),
    }
    rows = yield Stmt("log_fence", fence)
    if not rows:
        return Outcome(None)
    attempt = int(rows[0][0])
    stats = {"id": job_id, "attempt": attempt, "truncated": TRUNCATED_LEVEL}
    last_seq, count, chars, markers = (int(v) for v in (yield Stmt("log_stats", stats))[0])
    if markers:
        return Outcome(0)  # this attempt reached its cap already
    kept: list[tuple[int, str, str]] = []
    for at_ms, level, line in lines:
        line = clip_line(line, limits.line_chars)
        if count + len(kept) >= limits.lines or chars + len(line) > limits.chars:
            truncated = True
            break
        kept.append((at_ms, clip_line(level, 16), line))
        chars += len(line)
    if truncated:
        note = f"... truncated: lines past {limits.lines} lines or {limits.chars} characters"
        kept.append((now_ms, TRUNCATED_LEVEL, note + " for this attempt were dropped"))
    if kept:
        params = {"id": job_id, "attempt": attempt, "first": last_seq + 1}
        yield Stmt("log_insert", {**params, "rows": json.dumps(kept)})
    return Outcome(len(kept), {job_topic(job_id)} if kept else set())


def finish(
    job_id: str,
    output_json: str | None,
    error_json: str | None,
    now_ms: int,
    holder: Holder | None,
    endpoint_id: str | None = None,
) -> Op[Job | None]:
    status = JobStatus.COMPLETED if error_json is None else JobStatus.FAILED
    params = {
        "id": job_id,
        "endpoint_id": endpoint_id,
        "status": status.value,
        "output_json": output_json,
        "error_json": error_json,
        "now": now_ms,
        **_fence(holder),
    }
    # A job without a webhook ends in one statement, which may commit at once; a job with one
    # ends with its delivery queued in the same transaction, by the second.
    rows = yield Stmt("finish", {**params, "with_webhook": False}, commit=True)
    if not rows:
        rows = yield Stmt("finish", {**params, "with_webhook": True})
    if not rows:
        # terminal already (or never ours): the worker has let go of it all the same
        yield Stmt("let_go", {"id": job_id, **_fence(holder)})
        return Outcome(None)
    (job,) = yield from _terminal(rows, now_ms)
    return Outcome(job, set(ended_topics(job_id)), [events.JobsEnded((job,))])


def finish_many(
    results: list[PostedResult], now_ms: int, endpoint_id: str | None
) -> Op[list[Job | None]]:
    values: list[Job | None] = [None] * len(results)
    topics: set[str] = set()
    # One statement for the batch when one poster sent it (the route's case): each job's
    # first result, in job-id order, so rows are locked in that order and two batches (or a
    # batch and a purge) sharing jobs cannot deadlock on PostgreSQL. A job named again in the
    # same batch is judged after, one by one, as `finish` would.
    order = sorted(range(len(results)), key=lambda i: results[i].job_id)
    first: dict[str, int] = {}
    for i in order:
        first.setdefault(results[i].job_id, i)
    holders = {(r.holder.worker_id, r.holder.alias) if r.holder else None for r in results}
    single: list[int] = []
    if len(first) > 1 and len(holders) == 1:
        single = list(first.values())
        holder = results[single[0]].holder
        params = {
            "now": now_ms,
            "endpoint_id": endpoint_id,
            "worker_id": holder.worker_id if holder else None,
            "alias": holder.alias if holder else None,
        }
        # As in `finish`: the jobs without a webhook first, in a statement that may commit at
        # once; then any others, with their deliveries queued in the same transaction.
        batch = json.dumps([_result_row(results[i]) for i in single])
        rows = yield Stmt(
            "finish_batch", {**params, "rows": batch, "with_webhook": False}, commit=True
        )
        by_id = {job.id: job for job in (yield from _terminal(rows, now_ms))}
        rest = [_result_row(results[i]) for i in single if results[i].job_id not in by_id]
        if rest:
            rows = yield Stmt(
                "finish_batch", {**params, "rows": json.dumps(rest), "with_webhook": True}
            )
            by_id.update((job.id, job) for job in (yield from _terminal(rows, now_ms)))
        for i in single:
            r = results[i]
            job = by_id.get(r.job_id)
            values[i] = job
            if job is not None:
                topics.update(ended_topics(r.job_id))
            else:  # terminal already (or never ours): the worker has let go of it all the same
                yield Stmt("let_go", {"id": r.job_id, **_fence(r.holder)})
    done_already = set(single)
    for i in order:
        if i in done_already:
            continue
        r = results[i]
        done = yield from finish(
            r.job_id, r.output_json, r.error_json, now_ms, r.holder, endpoint_id
        )
        values[i] = done.value
        topics |= done.topics
    ended = tuple(job for job in values if job is not None)
    return Outcome(values, topics, [events.JobsEnded(ended)] if ended else [])


def _result_row(result: PostedResult) -> list[Any]:
    """One row of `{result_rows}`: what `finish` would set for this result."""
    status = JobStatus.COMPLETED if result.error_json is None else JobStatus.FAILED
    attempt = result.holder.attempt if result.holder else None
    return [result.job_id, status.value, result.output_json, result.error_json, attempt]


def touch_worker(
    endpoint_id: str,
    worker_id: str,
    now_ms: int,
    held_job_ids: list[str] | None,
    state: str | None,
    lease_ms: int | None,
    alias: str | None,
) -> Op[str]:
    """Returns the worker's state after the contact (`worker_take` acts on it)."""
    rows = yield Stmt(
        "touch_worker",
        {"worker_id": worker_id, "endpoint_id": endpoint_id, "state": state, "now": now_ms},
    )
    # Only a list naming a job renews its lease: contact alone says nothing about which jobs
    # the worker really has (a take reply may never have reached it).
    if lease_ms is not None and held_job_ids:
        renew = {
            "worker_id": worker_id,
            "alias": alias,
            "lease_until": now_ms + lease_ms,
            "ids": held_job_ids,
        }
        yield Stmt("renew_held", renew)
    if held_job_ids is not None:
        yield Stmt("let_go_unlisted", {"worker_id": worker_id, "ids": held_job_ids})
    return Outcome(str(rows[0][0]))


def jobs_to_stop(worker_id: str) -> Op[list[str]]:
    rows = yield Stmt("jobs_to_stop", {"worker_id": worker_id})
    return Outcome([row[0] for row in rows])


def worker(worker_id: str) -> Op[WorkerInfo | None]:
    rows = yield Stmt("worker_get", {"worker_id": worker_id})
    if not rows:
        return Outcome(None)
    held = yield Stmt("worker_held", {"worker_id": worker_id})
    wid, endpoint_id, state, last_seen_ms = rows[0]
    return Outcome(WorkerInfo(wid, endpoint_id, state, last_seen_ms, tuple(r[0] for r in held)))


def forget_worker(endpoint_id: str, worker_id: str) -> Op[bool]:
    rows = yield Stmt("forget_worker", {"endpoint_id": endpoint_id, "worker_id": worker_id})
    return Outcome(bool(rows))


# -- background ------------------------------------------------------------------------------


def sweep(now_ms: int, worker_lost_ms: int, max_retries: int) -> Op[SweepResult]:
    result = SweepResult()
    topics: set[str] = set()
    ended: list[Job] = []
    timeouts = {"now": now_ms, "ttl_error": TTL_ERROR, "execution_error": EXECUTION_ERROR}

    rows = yield Stmt("sweep_queue_ttl", timeouts)
    for job in (yield from _terminal(rows, now_ms)):
        ended.append(job)
        result.timed_out.append(job.id)
        topics.update(ended_topics(job.id))
    rows = yield Stmt("sweep_run_timeout", timeouts)
    for job in (yield from _terminal(rows, now_ms)):
        ended.append(job)
        result.timed_out.append(job.id)
        topics.update(ended_topics(job.id))
        if job.worker_id is not None:
            topics.add(stop_topic(job.worker_id))

    rows = yield Stmt("sweep_workers", {"lost_before": now_ms - worker_lost_ms})
    result.workers_lost = [row[0] for row in rows]

    # A lapsed lease or a lost worker: run the job again while retries remain, else fail it.
    lost = {"now": now_ms, "ids": result.workers_lost, "max_retries": max_retries}
    rows = yield Stmt("sweep_requeue", lost)
    for job in map(job_from_row, rows):
        yield Stmt("delete_chunks", {"id": job.id})
        result.requeued.append(job.id)
        topics.update((job_topic(job.id), queue_topic(job.endpoint_id)))
    rows = yield Stmt(
        "sweep_lost_fail", {**lost, "lost_prefix": LOST_PREFIX, "lost_suffix": LOST_SUFFIX}
    )
    for job in (yield from _terminal(rows, now_ms)):
        ended.append(job)
        result.failed_lost.append(job.id)
        topics.update(ended_topics(job.id))
        if job.worker_id is not None:
            topics.add(stop_topic(job.worker_id))

    rows = yield Stmt("sweep_expired", {"now": now_ms, "limit": SWEEP_DELETE_LIMIT})
    result.deleted = len(rows)
    changes: list[events.StoreEvent] = []
    if ended:
        changes.append(events.JobsEnded(tuple(ended)))
    if result.requeued:
        changes.append(events.JobsRequeued(tuple(result.requeued), lost=True))
    if result.workers_lost:
        changes.append(events.WorkersLost(tuple(result.workers_lost)))
    return Outcome(result, topics, changes)


def due_webhooks(now_ms: int, limit: int) -> Op[list[WebhookDelivery]]:
    params = {"now": now_ms, "limit": limit, "claim_until": now_ms + WEBHOOK_CLAIM_MS}
    rows = yield Stmt("due_webhooks", params)
    deliveries = [WebhookDelivery(*row) for row in rows]
    deliveries.sort(key=lambda d: (d.next_attempt_at_ms, d.id))
    return Outcome(deliveries)


def webhook_attempted(
    delivery_id: int, ok: bool, now_ms: int, next_attempt_at_ms: int | None
) -> Op[None]:
    final = ok or next_attempt_at_ms is None
    if final:
        rows = yield Stmt("webhook_delete", {"id": delivery_id})
        # `attempts` counts the failures before this attempt
        attempted = [(job_id, int(failed) + 1) for job_id, failed in rows]
    else:
        rows = yield Stmt(
            "webhook_reschedule", {"id": delivery_id, "next_attempt_at_ms": next_attempt_at_ms}
        )
        # ... and here includes it
        attempted = [(job_id, int(failed)) for job_id, failed in rows]
    changes: list[events.StoreEvent] = [
        events.WebhookAttempted(job_id, attempt, ok, final, now_ms) for job_id, attempt in attempted
    ]
    return Outcome(None, set(), changes)


# -- read-only views for the dashboard and metrics ------------------------------------------


def list_jobs(
    endpoint_id: str | None,
    status: str | None,
    since_ms: int,
    limit: int,
    offset: int,
    now_ms: int,
) -> Op[list[Job]]:
    params = {
        "endpoint_id": endpoint_id,
        "status": status,
        "since": since_ms,
        "limit": limit,
        "offset": offset,
        "now": now_ms,
    }
    rows = yield Stmt("dash_list_jobs", params)
    return Outcome([job_from_row(row) for row in rows])


def job_counts(now_ms: int) -> Op[dict[str, dict[str, int]]]:
    counts: dict[str, dict[str, int]] = {}
    for endpoint_id, status, count in (yield Stmt("dash_job_counts", {"now": now_ms})):
        counts.setdefault(endpoint_id, {})[status] = int(count)
    return Outcome(counts)


def list_workers() -> Op[list[WorkerInfo]]:
    rows = yield Stmt("dash_workers", {})
    held: dict[str, list[str]] = {}
    for worker_id, job_id in (yield Stmt("dash_running", {})):
        held.setdefault(worker_id, []).append(job_id)
    return Outcome(
        [
            WorkerInfo(wid, endpoint_id, state, last_seen_ms, tuple(held.get(wid, ())))
            for wid, endpoint_id, state, last_seen_ms in rows
        ]
    )


def jobs_by_ids(job_ids: list[str], now_ms: int) -> Op[list[Job]]:
    rows = yield Stmt("dash_jobs_by_ids", {"ids": job_ids, "now": now_ms})
    return Outcome([job_from_row(row) for row in rows])


def job_webhooks(job_id: str) -> Op[list[WebhookDelivery]]:
    rows = yield Stmt("dash_job_webhooks", {"id": job_id})
    return Outcome([WebhookDelivery(*row) for row in rows])


def finished_minutes(since_ms: int, now_ms: int) -> Op[list[FinishedMinute]]:
    rows = yield Stmt("dash_finished_minutes", {"since": since_ms, "now": now_ms})

    def number(value: Any) -> float | None:  # PostgreSQL's AVG is a Decimal
        return None if value is None else float(value)

    def whole(value: Any) -> int | None:
        return None if value is None else int(value)

    return Outcome(
        [
            FinishedMinute(
                endpoint_id=str(row[0]),
                at_ms=since_ms + int(row[1]) * 60_000,
                finished=int(row[2]),
                completed=int(row[3]),
                mean_execution_ms=number(row[4]),
                max_execution_ms=whole(row[5]),
                mean_delay_ms=number(row[6]),
                max_delay_ms=whole(row[7]),
            )
            for row in rows
        ]
    )


# -- endpoints ---------------------------------------------------------------------------------


def _endpoint_from_row(row: tuple[Any, ...]) -> EndpointConfig:
    endpoint_id, config_json, created_at_ms, updated_at_ms = row
    base = EndpointConfig(
        str(endpoint_id), created_at_ms=created_at_ms, updated_at_ms=updated_at_ms
    )
    return base.updated(json.loads(config_json))


def put_endpoint(config: EndpointConfig, now_ms: int) -> Op[EndpointConfig]:
    settings = {
        k: v for k, v in config.to_wire().items() if k not in ("name", "createdAt", "updatedAt")
    }
    params = {
        "endpoint_id": config.endpoint_id,
        "config_json": json.dumps(settings, separators=(",", ":")),
        "execution_timeout_ms": config.execution_timeout_ms,
        "now": now_ms,
    }
    rows = yield Stmt("endpoint_put", params)
    return Outcome(_endpoint_from_row(rows[0]))


def get_endpoint(endpoint_id: str) -> Op[EndpointConfig | None]:
    rows = yield Stmt("endpoint_get", {"endpoint_id": endpoint_id})
    return Outcome(_endpoint_from_row(rows[0]) if rows else None)


def list_endpoints() -> Op[list[EndpointConfig]]:
    rows = yield Stmt("endpoint_list", {})
    return Outcome([_endpoint_from_row(row) for row in rows])


def delete_endpoint(endpoint_id: str) -> Op[bool]:
    rows = yield Stmt("endpoint_delete", {"endpoint_id": endpoint_id})
    return Outcome(bool(rows))


def queue_stats() -> Op[dict[str, QueueStats]]:
    stats: dict[str, QueueStats] = {}
    for endpoint_id, queued, running, oldest in (yield Stmt("queue_stats", {})):
        seen = stats.get(endpoint_id, QueueStats())
        stats[endpoint_id] = QueueStats(
            queued=seen.queued + int(queued),
            running=seen.running + int(running),
            oldest_queued_at_ms=seen.oldest_queued_at_ms if oldest is None else int(oldest),
        )
    return Outcome(stats)
