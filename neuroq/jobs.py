"""Job states, the job record and its two wire shapes.

Every part of the system speaks about jobs through this module: the store persists `Job`, the
API renders `Job.status_object()` to clients and webhooks, and `Job.worker_payload()` to workers.
The state names are the wire strings of RunPod's API, so an enum member can be sent as is.

    IN_QUEUE --take--> IN_PROGRESS --done--> COMPLETED | FAILED
    IN_QUEUE --cancel / purge--> CANCELLED     IN_PROGRESS --cancel--> CANCELLED (+ stop signal)
    IN_QUEUE --ttl--> TIMED_OUT                IN_PROGRESS --executionTimeout / ttl--> TIMED_OUT
    IN_PROGRESS --lease lost--> IN_QUEUE (retries + 1) or FAILED ("worker lost")
    IN_QUEUE --take, but the stored job cannot be sent--> FAILED (saying why)
    FAILED | TIMED_OUT --retry--> IN_QUEUE (same id, retries + 1)

Times are integers in milliseconds since the Unix epoch (`*_ms`), so SQLite and PostgreSQL store
them alike and no time zone can slip in.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from neuroq import strict_json


class JobStatus(StrEnum):
    """The six states a job can be in; values are RunPod's wire strings."""

    #: accepted and waiting for a worker
    IN_QUEUE = "IN_QUEUE"
    #: leased to one worker, which keeps the lease alive with heartbeats
    IN_PROGRESS = "IN_PROGRESS"
    #: the worker returned an output
    COMPLETED = "COMPLETED"
    #: the worker returned an error, or the server gave up on the job (e.g. worker lost)
    FAILED = "FAILED"
    #: a client cancelled it, or purged the queue it waited in
    CANCELLED = "CANCELLED"
    #: its executionTimeout or ttl ran out
    TIMED_OUT = "TIMED_OUT"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)

#: The only transitions a store may make. Terminal states are final except for `retry`.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.IN_QUEUE: frozenset(
        {
            JobStatus.IN_PROGRESS,
            JobStatus.CANCELLED,
            JobStatus.TIMED_OUT,
            JobStatus.FAILED,  # taken, but its stored payload cannot be sent to a worker
        }
    ),
    JobStatus.IN_PROGRESS: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.TIMED_OUT,
            JobStatus.IN_QUEUE,  # lease lost, requeued
        }
    ),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset({JobStatus.IN_QUEUE}),
    JobStatus.CANCELLED: frozenset(),
    JobStatus.TIMED_OUT: frozenset({JobStatus.IN_QUEUE}),
}

# Policy limits from the RunPod docs, in milliseconds.
EXECUTION_TIMEOUT_DEFAULT_MS = 600_000
EXECUTION_TIMEOUT_MIN_MS = 5_000
EXECUTION_TIMEOUT_MAX_MS = 7 * 24 * 3600 * 1000
TTL_DEFAULT_MS = 24 * 3600 * 1000
TTL_MIN_MS = 10_000
TTL_MAX_MS = 7 * 24 * 3600 * 1000


def now_ms() -> int:
    """Wall-clock time in integer milliseconds, the unit of every stored time."""
    return time.time_ns() // 1_000_000


def new_job_id(sync: bool = False) -> str:
    """A URL-path-safe id in RunPod's style: `<uuid4>-u1`, or `sync-<uuid4>-u1` for runsync."""
    base = f"{uuid.uuid4()}-u1"
    return f"sync-{base}" if sync else base


def new_worker_id() -> str:
    return "w-" + secrets.token_hex(6)


def is_path_safe(value: str, max_len: int = 128) -> bool:
    """True for ids that workers can paste raw into URL paths: `[A-Za-z0-9_-]`, 1..max_len chars."""
    if not 0 < len(value) <= max_len:
        return False
    return all(c.isascii() and (c.isalnum() or c in "-_") for c in value)


@dataclass(frozen=True)
class Policy:
    """Per-job limits from the request's `policy` object, converted to our names and units."""

    execution_timeout_ms: int = EXECUTION_TIMEOUT_DEFAULT_MS
    ttl_ms: int = TTL_DEFAULT_MS
    low_priority: bool = False
    #: the client named executionTimeout; when False, a configured endpoint's own default wins
    #: at submit (the stored job always carries the timeout that applies)
    execution_timeout_explicit: bool = field(default=False, compare=False)

    def to_wire(self) -> dict[str, Any]:
        return {
            "executionTimeout": self.execution_timeout_ms,
            "ttl": self.ttl_ms,
            "lowPriority": self.low_priority,
        }


@dataclass(frozen=True)
class NewJob:
    """What a client submitted, validated, before the store gives it a state."""

    endpoint_id: str
    input_json: str
    policy: Policy = field(default_factory=Policy)
    webhook: str | None = None
    s3_config_json: str | None = None
    #: submitted through runsync: kept a shorter time after it ends
    sync: bool = False
    #: how long the record stays after a terminal state; None = the store's default for the kind
    retention_ms: int | None = None
    id: str = ""


@dataclass(frozen=True)
class Job:
    """One job as stored. JSON payloads stay encoded (`*_json`) so big outputs are not re-parsed
    on every status poll; None means absent, while the text "null" is an explicit JSON null."""

    id: str
    endpoint_id: str
    status: JobStatus
    input_json: str
    policy: Policy
    created_at_ms: int
    webhook: str | None = None
    s3_config_json: str | None = None
    sync: bool = False
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    worker_id: str | None = None
    lease_expires_at_ms: int | None = None
    output_json: str | None = None
    error_json: str | None = None
    retries: int = 0
    #: when a terminal record is deleted; None while the job is live
    expires_at_ms: int | None = None
    #: the worker holding it must be told to stop (cancelled or timed out while running)
    stop_pending: bool = False
    #: number of stream chunks already handed out by the consuming `/stream` route
    stream_cursor: int = 0

    @property
    def delay_time_ms(self) -> int | None:
        if self.started_at_ms is None:
            return None
        return max(0, self.started_at_ms - self.created_at_ms)

    @property
    def execution_time_ms(self) -> int | None:
        if self.started_at_ms is None or self.finished_at_ms is None:
            return None
        return max(0, self.finished_at_ms - self.started_at_ms)

    def status_object(self) -> dict[str, Any]:
        """The RunPod status object (docs/api.md, Conventions), as sent by status, runsync, cancel
        and webhooks. `s3Config` is never included."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if (delay := self.delay_time_ms) is not None:
            body["delayTime"] = delay
        if (execution := self.execution_time_ms) is not None:
            body["executionTime"] = execution
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.output_json is not None:
            body["output"] = json.loads(self.output_json)
        if self.error_json is not None:
            body["error"] = json.loads(self.error_json)
        if self.retries > 0:
            body["retries"] = self.retries
        return body

    def worker_payload(self) -> dict[str, Any]:
        """The job object handed to a worker (docs/worker-protocol.md, Routes)."""
        body: dict[str, Any] = {
            "id": self.id,
            "input": json.loads(self.input_json),
            "webhook": self.webhook,
            "policy": self.policy.to_wire(),
            # our addition: which attempt this delivery is (the job's retries so far); our
            # worker echoes it on its posts so a late post from an earlier attempt is fenced
            # out even when the same worker id took the job again
            "attempt": self.retries,
        }
        if self.s3_config_json is not None:
            body["s3Config"] = json.loads(self.s3_config_json)
        return body

    def undeliverable(self) -> str | None:
        """Why the job object cannot be sent to a worker as strict JSON, or None when it can.

        Inputs are checked strictly when submitted, so this only finds records written before
        that or by hand; a take fails such a job rather than lease it (see store ops.take)."""
        try:
            strict_json.dumps(self.worker_payload(), "job")
        except (ValueError, RecursionError) as exc:  # JSONRejected is a ValueError
            return str(exc)
        return None
