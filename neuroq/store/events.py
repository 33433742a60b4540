"""What a store tells its listeners after each committed change.

A store operation already knows what it changed (the rows its statements returned), so it says
so as typed events alongside its result; the store hands them to every subscriber once the
transaction has committed. Metrics, the dashboard's history and anything added later listen
here instead of wrapping the store, so a new store method takes one edit, not three.

Events describe this process's operations only: several server processes sharing one database
each see their own. A listener that fails is logged and skipped; it can never fail or undo the
operation, which has committed by the time it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from neuroq.jobs import Job

log = logging.getLogger("neuroq.store")


@dataclass(frozen=True)
class JobSubmitted:
    """A new job entered the queue (an idempotent repeat is not one)."""

    job: Job


@dataclass(frozen=True)
class JobsTaken:
    """Jobs leased to a worker, as they were at the take."""

    jobs: tuple[Job, ...]


@dataclass(frozen=True)
class JobsEnded:
    """Jobs that reached a terminal state: a result, a cancel or purge, a timeout, a lost
    worker, or an undeliverable record. Each as it was at that moment."""

    jobs: tuple[Job, ...]


@dataclass(frozen=True)
class JobsRequeued:
    """Running jobs sent back to the queue: `lost` when their lease lapsed (a new attempt),
    otherwise a take whose reply never reached the worker (no attempt counted)."""

    job_ids: tuple[str, ...]
    lost: bool


@dataclass(frozen=True)
class WorkersLost:
    """Workers forgotten after `worker_lost_s` without contact (their jobs are requeued or
    failed, and reported as such)."""

    worker_ids: tuple[str, ...]


@dataclass(frozen=True)
class JobRetried:
    """A FAILED or TIMED_OUT job queued again by `/retry`."""

    job: Job


@dataclass(frozen=True)
class WebhookAttempted:
    """One webhook delivery attempt; `final` when it will not be tried again."""

    job_id: str
    #: 1 for the first attempt
    attempt: int
    ok: bool
    final: bool
    at_ms: int


StoreEvent = (
    JobSubmitted
    | JobsTaken
    | JobsEnded
    | JobsRequeued
    | WorkersLost
    | JobRetried
    | WebhookAttempted
)
Listener = Callable[[StoreEvent], None]


class StoreEvents:
    """Subscribers of one store. Listeners run on the event loop right after the commit, in
    subscription order, and must be quick (count, append, set an event): no I/O."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, events: list[StoreEvent]) -> None:
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:
                    log.exception("store event listener failed on %s", type(event).__name__)
