"""The store interface: every durable fact about jobs, workers and webhooks goes through it.

Each method that changes state is one atomic operation (one transaction), and each checks the
state it starts from inside that operation, so several API processes sharing one database can
call any method at any time and exactly one caller wins each transition. The HTTP layer holds no
job state of its own; a second store (PostgreSQL) is a second implementation of this protocol,
checked by the same contract tests.

Wake-ups: a store publishes on its `notifier` after each change it commits, so long-polls in the
same process wake at once. Processes that share a database but not memory wake through the
store's own channel where it has one (PostgreSQL LISTEN/NOTIFY) or by the bounded re-check in
`wait_until` (SQLite).

Topics published (helpers below build the names):
- `job_topic(job_id)`: any change to that job (state, progress, stream chunk).
- `end_topic(job_id)`: that job reached a terminal state (what runsync and status-sync wait
  for, so they are not woken by the steps in between).
- `output_topic(job_id)`: that job's progress output changed or it ended (what status?wait
  waits for, so a worker taking the job does not wake it).
- `queue_topic(endpoint_id)`: a job became IN_QUEUE on that endpoint.
- `stop_topic(worker_id)`: a job held by that worker needs a stop signal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import Job, NewJob
from neuroq.store.events import StoreEvents

T = TypeVar("T")


def job_topic(job_id: str) -> str:
    return f"job:{job_id}"


def end_topic(job_id: str) -> str:
    return f"end:{job_id}"


def output_topic(job_id: str) -> str:
    return f"out:{job_id}"


def ended_topics(job_id: str) -> tuple[str, str, str]:
    """What a transition to a terminal state publishes."""
    return job_topic(job_id), end_topic(job_id), output_topic(job_id)


def queue_topic(endpoint_id: str) -> str:
    return f"queue:{endpoint_id}"


def stop_topic(worker_id: str) -> str:
    return f"stop:{worker_id}"


class Notifier:
    """In-process wake-ups keyed by topic name.

    Each topic has a version counter; a waiter reads the version *before* it checks the store and
    then waits for the version to move, so a change committed between the check and the wait is
    never missed.
    """

    def __init__(self) -> None:
        self._versions: dict[str, int] = {}
        #: per topic, the futures of the waits now sleeping on it
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}

    def version(self, topic: str) -> int:
        return self._versions.get(topic, 0)

    def publish(self, topic: str) -> None:
        self._versions[topic] = self._versions.get(topic, 0) + 1
        for waiter in self._waiters.pop(topic, ()):
            if not waiter.done():
                waiter.set_result(None)

    def publish_all(self, topics: list[str] | set[str]) -> None:
        for topic in topics:
            self.publish(topic)

    async def wait(self, topic: str, since_version: int, timeout_s: float) -> bool:
        """Wait until `topic` moves past `since_version`; False on timeout.

        A bare future and a timer rather than `asyncio.wait_for`, which makes a task per wait:
        every long-poll sleeps here, many times a second under load."""
        if self.version(topic) != since_version:
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.setdefault(topic, set())
        waiters.add(waiter)
        timer = loop.call_later(timeout_s, _time_out, waiter)
        try:
            await waiter
        except TimeoutError:
            return self.version(topic) != since_version
        finally:
            timer.cancel()
            waiters.discard(waiter)
            if not waiters and self._waiters.get(topic) is waiters:
                del self._waiters[topic]
        return True


def _time_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def wait_until(
    notifier: Notifier,
    topic: str,
    check: Callable[[], Awaitable[T | None]],
    timeout_s: float,
    recheck_s: float,
    *,
    since: int | None = None,
) -> T | None:
    """Run `check` until it returns something other than None or `timeout_s` passes.

    Between checks, sleep on the topic's notifier, but at most `recheck_s`, so a change made by
    another process that could not notify us is still seen within `recheck_s`. A caller that
    has just looked at the state itself passes `since`, the topic's version read *before* that
    look, and the first check is skipped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        if since is None:
            version = notifier.version(topic)
            result = await check()
            if result is not None:
                return result
        else:
            version, since = since, None
        remaining = deadline - loop.time()
        if remaining <= 0:
            return None
        await notifier.wait(topic, version, min(remaining, recheck_s))


@dataclass(frozen=True)
class WebhookDelivery:
    """One pending POST of a job's status object to its webhook (the durable outbox row)."""

    id: int
    job_id: str
    url: str
    body_json: str
    attempts: int
    next_attempt_at_ms: int


#: worker states a worker sets through the protocol; once set they stick (see touch_worker)
RECYCLING = "recycling"
UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class TakeLook:
    """One look of a job-take for `JobStore.worker_take`."""

    endpoint_id: str
    worker_id: str
    limit: int
    now_ms: int
    lease_ms: int
    #: record contact first (the first look of a take request)
    touch: bool
    #: as `touch_worker`'s: [] for job_in_progress=0, None when not said
    held_job_ids: list[str] | None = None


@dataclass(frozen=True)
class WorkerInfo:
    worker_id: str
    endpoint_id: str
    #: "initializing" | "ready" | "unhealthy" | "recycling"
    state: str
    last_seen_ms: int
    held_job_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueStats:
    """What a scaler decides on for one endpoint."""

    queued: int = 0
    running: int = 0
    #: when the job that has waited longest entered the queue; None when none waits
    oldest_queued_at_ms: int | None = None


@dataclass(frozen=True)
class FinishedMinute:
    """The retained jobs of one endpoint that finished within one minute, for the dashboard's
    plots. Read from the jobs themselves, so the plots survive a restart and agree across
    server processes; they reach back only as far as finished jobs are retained."""

    endpoint_id: str
    #: the minute's start, ms since the epoch
    at_ms: int
    finished: int
    completed: int
    #: execution (taken to finished) and delay (submitted or retried to taken), in ms; None
    #: when no job of the minute was ever taken (all cancelled or timed out in the queue)
    mean_execution_ms: float | None
    max_execution_ms: int | None
    mean_delay_ms: float | None
    max_delay_ms: int | None


@dataclass
class SweepResult:
    """What one `sweep` changed, for logs and metrics."""

    timed_out: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)
    failed_lost: list[str] = field(default_factory=list)
    deleted: int = 0
    workers_lost: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Holder:
    """Who a worker write (result, progress, stream chunk) claims comes from: the fence it must
    pass. A write changes a job only while the job is IN_PROGRESS and held by `worker_id` (or by
    `alias`, the anonymous id a `$RUNPOD_POD_ID` take from the poster's host was given) and, when
    `attempt` is named, only while the job is in that attempt (its `retries` count). Anything
    else is a zombie (a worker whose lease lapsed) or a stranger, and changes nothing."""

    worker_id: str
    alias: str | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class PostedResult:
    """One final result of a batch for `JobStore.finish_many`: what `finish` takes for one job."""

    job_id: str
    output_json: str | None
    error_json: str | None
    holder: Holder | None = None


@dataclass(frozen=True)
class LogLine:
    """One captured log record of a job (a handler's log line, or a failure's traceback; it may
    span several text lines). `attempt` is the job's `retries` when the line was written: the
    lines of an attempt that was requeued are kept, marked with their attempt."""

    seq: int
    attempt: int
    at_ms: int
    level: str
    line: str


#: the level of the one marker row that says lines of an attempt were dropped at its cap
TRUNCATED_LEVEL = "TRUNCATED"


@dataclass(frozen=True)
class LogLimits:
    """How much log text one attempt of a job may keep; past either cap, lines are dropped and
    one TRUNCATED marker is stored. Lengths are counted in characters."""

    lines: int = 1_000
    chars: int = 256 * 1024
    #: a longer line is cut to this, saying how much was cut
    line_chars: int = 8 * 1024


class InvalidTransition(Exception):
    """The job exists but is not in a state that allows this operation."""

    def __init__(self, job: Job, operation: str) -> None:
        super().__init__(f"cannot {operation} a job in state {job.status.value}")
        self.job = job
        self.operation = operation


class JobStore(Protocol):
    """The operations the API needs. All times are `*_ms` integers; `now_ms` is passed in so
    tests can drive time and so several processes agree on one clock reading per operation."""

    notifier: Notifier
    #: what each committed operation changed, for metrics and the dashboard (neuroq.store.events)
    events: StoreEvents
    #: how often a long-poll re-reads the store when no in-process notification came
    recheck_s: float

    async def open(self) -> None:
        """Connect, create or migrate the schema."""

    async def close(self) -> None: ...

    # -- clients -----------------------------------------------------------------------------

    async def submit(
        self, new: NewJob, now_ms: int, idempotency_key: str | None = None
    ) -> tuple[Job, bool]:
        """Insert an IN_QUEUE job. With an idempotency key already used on this endpoint (and
        still retained), return that job and False instead of inserting."""
        ...

    async def get(self, endpoint_id: str, job_id: str) -> Job | None:
        """The job, or None when unknown, expired, or on another endpoint."""
        ...

    def recently_submitted(self, endpoint_id: str, job_id: str, version: int) -> Job | None:
        """The job as this process queued it, if its output topic is still at `version` (the
        caller read it just now), which it was right after the submit: nothing this process
        knows of has ended the job or given it output since; else None. No I/O. Another
        process's change not yet notified here is not seen, so the job may be older than the
        store's: it only lets a `status?wait` start its hold without a read (the hold's
        re-checks and its answer read the store, or the job this process ended)."""
        ...

    def ended_mark(self) -> int:
        """A mark to pass to `recently_ended`: how many jobs this process has ended so far."""
        ...

    def recently_ended(self, endpoint_id: str, job_id: str, after: int) -> Job | None:
        """The job as this process ended it, if it ended after `after` (an `ended_mark` taken
        once the caller had read the job) and nothing has changed it since (its job topic has
        not moved: a retry here, or one in another process that notified us, moves it); else
        None, and the caller reads the store. No I/O: it spares a long-poll woken by that very
        end a read of the job it was just handed. The mark keeps an end older than the
        caller's own read from ever answering it (a retry in another process whose NOTIFY has
        not arrived yet)."""
        ...

    async def cancel(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        """IN_QUEUE or IN_PROGRESS -> CANCELLED (setting stop_pending if a worker holds it).
        A terminal job is returned unchanged. None when unknown."""
        ...

    async def retry(self, endpoint_id: str, job_id: str, now_ms: int) -> Job | None:
        """FAILED or TIMED_OUT -> IN_QUEUE with retries + 1 and output/error/timings cleared.
        Raises InvalidTransition from other states; None when unknown."""
        ...

    async def shorten_retention(
        self, endpoint_id: str, job_id: str, ttl_ms: int, now_ms: int
    ) -> bool:
        """Status `?ttl=`: a terminal record is kept at most ttl_ms from now; a live job's record
        at most ttl_ms after it ends. Never lengthens retention. False when unknown."""
        ...

    async def purge_queue(self, endpoint_id: str, now_ms: int) -> int:
        """Every IN_QUEUE job of the endpoint -> CANCELLED; returns how many."""
        ...

    async def read_stream(
        self, endpoint_id: str, job_id: str, after_seq: int | None = None
    ) -> tuple[Job, list[tuple[int, str]]] | None:
        """Stream chunks (seq, chunk_json) in order.

        With `after_seq=None` this is RunPod's consuming read: it returns the chunks after the
        job's `stream_cursor` and advances the cursor past them, atomically, so two readers
        never get the same chunk. With an `after_seq` (server-sent events, Last-Event-ID) it
        returns the chunks with seq > after_seq and moves no cursor. Seq numbers start at 1.
        None when the job is unknown."""
        ...

    async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
        """The `/health` body (docs/api.md, Routes): `jobs` and `workers` counts, every key
        present."""
        ...

    # -- workers -----------------------------------------------------------------------------

    async def take(
        self, endpoint_id: str, worker_id: str, limit: int, now_ms: int, lease_ms: int
    ) -> list[Job]:
        """Lease up to `limit` IN_QUEUE jobs to the worker: normal priority before low priority,
        FIFO within each. Each becomes IN_PROGRESS with started_at_ms, worker_id and
        lease_expires_at_ms = now + lease_ms. No job is ever given to two workers."""
        ...

    async def release(self, job_ids: list[str], worker_id: str, now_ms: int) -> int:
        """Put jobs taken by this worker back IN_QUEUE without counting a retry (the reply that
        carried them could not be written). Returns how many."""
        ...

    async def record_progress(
        self,
        job_id: str,
        output_json: str,
        now_ms: int,
        holder: Holder | None = None,
        lease_ms: int | None = None,
    ) -> bool:
        """Set the progress output of an IN_PROGRESS job held by `holder` (any holder when None)
        and renew that job's lease by `lease_ms` when given; False (ignored) otherwise."""
        ...

    async def append_stream(
        self,
        job_id: str,
        chunk_json: str,
        now_ms: int,
        holder: Holder | None = None,
        lease_ms: int | None = None,
    ) -> int | None:
        """Append a chunk to the stream of an IN_PROGRESS job held by `holder` (any holder when
        None) and renew that job's lease by `lease_ms` when given; the chunk's seq, or None when
        ignored."""
        ...

    async def append_logs(
        self,
        job_id: str,
        lines: list[tuple[int, str, str]],
        now_ms: int,
        holder: Holder | None = None,
        *,
        truncated: bool = False,
        limits: LogLimits | None = None,
        late_ms: int = 60_000,
        lease_ms: int | None = None,
    ) -> int | None:
        """Append `(at_ms, level, line)` records to the log of the job's current attempt, if
        `holder` holds that attempt (any holder when None): while the job is IN_PROGRESS, or for
        `late_ms` after it ended with the holder still recorded, so lines flushed just after
        the result still land; a post to a running job renews its lease by `lease_ms` when
        given. Lines past `limits` (default LogLimits()) are dropped and one TRUNCATED marker is
        stored per attempt (also when the poster says it dropped lines itself: `truncated`).
        Returns how many rows were stored, or None when fenced out."""
        ...

    async def read_logs(
        self, endpoint_id: str, job_id: str, after_seq: int = 0, limit: int = 1_000
    ) -> tuple[Job, list[LogLine], bool] | None:
        """The job, up to `limit` log lines with seq > after_seq in order, and whether any
        attempt dropped lines at its cap. None when the job is unknown or expired."""
        ...

    async def finish(
        self,
        job_id: str,
        *,
        output_json: str | None,
        error_json: str | None,
        now_ms: int,
        holder: Holder | None = None,
        endpoint_id: str | None = None,
    ) -> Job | None:
        """IN_PROGRESS -> FAILED when error_json is not None, else COMPLETED. Clears the job from
        the worker's stop list. A job already terminal (or, when named, not held by `holder` or
        not on `endpoint_id`) is left as it is and None is returned, so a late, repeated or
        zombie post changes nothing. A webhook delivery is queued in the same transaction when
        the job has a webhook."""
        ...

    async def finish_many(
        self, results: list[PostedResult], *, now_ms: int, endpoint_id: str | None = None
    ) -> list[Job | None]:
        """`finish` for each result, in order, all in one transaction: a worker's batch of
        results costs one commit instead of one each (on PostgreSQL the commit, its WAL flush
        and its NOTIFY are most of a finish). Returns what `finish` would have, per result."""
        ...

    async def touch_worker(
        self,
        endpoint_id: str,
        worker_id: str,
        now_ms: int,
        *,
        held_job_ids: list[str] | None = None,
        state: str | None = None,
        lease_ms: int | None = None,
        alias: str | None = None,
    ) -> None:
        """Record contact from a worker (which keeps the worker itself from being lost).

        Leases are renewed only by evidence that the worker holds *that* job: with
        `held_job_ids` (a ping's list, or [] for a take with job_in_progress=0) and `lease_ms`,
        the leases of the listed jobs it holds (itself or under `alias`) are renewed, and
        stop_pending is cleared on jobs it no longer lists. Contact without a list renews no
        lease, so a delivery the worker never received lapses and is requeued while the worker
        goes on polling. `state` sets the worker state ("unhealthy", "recycling")."""
        ...

    async def worker_take(self, look: TakeLook) -> tuple[bool, list[Job]]:
        """One look of a job-take: with `look.touch`, record contact as `touch_worker` does
        (`look.held_job_ids` as there); then, unless the worker is "recycling", `take` up to
        `look.limit` jobs. Returns whether it is recycling, and the jobs taken."""
        ...

    async def jobs_to_stop(self, worker_id: str) -> list[str]:
        """Ids of jobs this worker holds that are terminal with stop_pending set."""
        ...

    async def worker(self, worker_id: str) -> WorkerInfo | None: ...

    async def forget_worker(self, endpoint_id: str, worker_id: str) -> bool:
        """Remove a worker that said it is leaving, so no sweep reports it lost; False when
        no such worker is known on that endpoint. Its jobs are left to their leases."""
        ...

    # -- endpoints ---------------------------------------------------------------------------

    async def put_endpoint(self, config: EndpointConfig, now_ms: int) -> EndpointConfig:
        """Create or replace an endpoint's settings; returns them as stored (with times)."""
        ...

    async def get_endpoint(self, endpoint_id: str) -> EndpointConfig | None: ...

    async def list_endpoints(self) -> list[EndpointConfig]:
        """Every configured endpoint, by id."""
        ...

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        """Forget an endpoint's settings (its jobs stay); False when it had none."""
        ...

    async def queue_stats(self) -> dict[str, QueueStats]:
        """Queued and running counts and the oldest queue entry, per endpoint with live jobs.
        Reads only live jobs, so it costs the same with any number of retained ones."""
        ...

    # -- background --------------------------------------------------------------------------

    async def sweep(self, now_ms: int, worker_lost_ms: int, max_retries: int) -> SweepResult:
        """Apply every time-based transition due at now_ms, each atomically:
        IN_QUEUE past ttl -> TIMED_OUT; IN_PROGRESS past executionTimeout or ttl -> TIMED_OUT
        (stop_pending); IN_PROGRESS past its lease -> IN_QUEUE with retries + 1, or FAILED with
        error "worker lost ..." after max_retries; workers silent for worker_lost_ms -> removed;
        terminal records past expires_at_ms -> deleted. Safe to run from several processes."""
        ...

    async def due_webhooks(self, now_ms: int, limit: int) -> list[WebhookDelivery]:
        """Claim deliveries whose next attempt is due (each claimed by one caller at a time)."""
        ...

    async def webhook_attempted(
        self, delivery_id: int, *, ok: bool, now_ms: int, next_attempt_at_ms: int | None
    ) -> None:
        """Record an attempt: delete on success or when next_attempt_at_ms is None (gave up),
        else reschedule."""
        ...

    # -- read-only views (dashboard, metrics) ------------------------------------------------

    async def list_jobs(
        self,
        *,
        endpoint_id: str | None = None,
        status: str | None = None,
        since_ms: int = 0,
        limit: int = 50,
        offset: int = 0,
        now_ms: int,
    ) -> list[Job]:
        """Retained jobs, newest first; each filter applies when given (`since_ms` bounds the
        creation time). Paged by `limit` and `offset`."""
        ...

    async def job_counts(self, now_ms: int) -> dict[str, dict[str, int]]:
        """Retained jobs as endpoint_id -> status value -> count (only states present)."""
        ...

    async def list_workers(self) -> list[WorkerInfo]:
        """Every live worker with the jobs it runs, ordered by endpoint then worker id."""
        ...

    async def jobs_by_ids(self, job_ids: list[str], now_ms: int) -> list[Job]:
        """The retained jobs among `job_ids`, on any endpoint, in no particular order."""
        ...

    async def job_webhooks(self, job_id: str) -> list[WebhookDelivery]:
        """Deliveries of the job still in the outbox (pending or being retried)."""
        ...

    async def finished_minutes(self, since_ms: int, now_ms: int) -> list[FinishedMinute]:
        """Retained jobs finished between `since_ms` and `now_ms`, per endpoint and minute
        (minutes counted from `since_ms`), ordered by endpoint then time; minutes without a
        finished job are absent."""
        ...
