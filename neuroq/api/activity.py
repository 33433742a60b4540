"""What this server process saw happen to jobs, kept for the dashboard.

A store event listener (neuroq.store.events): every job change moves the `JOBS_CHANGED` topic of
`changes`, so a dashboard page held open on it wakes at once, and each webhook attempt is kept
per job (the outbox only holds deliveries still pending) for the job page. Per process and in
memory: another server process sharing the database keeps its own.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from neuroq.store.base import Notifier
from neuroq.store.events import StoreEvent, WebhookAttempted

#: the topic `Activity.changes` publishes when a job changes state
JOBS_CHANGED = "jobs"
#: jobs whose webhook attempts are remembered (the oldest are forgotten first)
WEBHOOK_HISTORY_JOBS = 2000


@dataclass(frozen=True)
class WebhookAttempt:
    """One delivery attempt seen by this process, for the job page."""

    at_ms: int
    attempt: int
    ok: bool
    #: the delivery will not be tried again (succeeded or gave up)
    final: bool


class Activity:
    def __init__(self) -> None:
        self.changes = Notifier()
        self._webhook_attempts: OrderedDict[str, list[WebhookAttempt]] = OrderedDict()

    def on_store_event(self, event: StoreEvent) -> None:
        if isinstance(event, WebhookAttempted):
            history = self._webhook_attempts.setdefault(event.job_id, [])
            self._webhook_attempts.move_to_end(event.job_id)
            history.append(WebhookAttempt(event.at_ms, event.attempt, event.ok, event.final))
            while len(self._webhook_attempts) > WEBHOOK_HISTORY_JOBS:
                self._webhook_attempts.popitem(last=False)
        else:
            self.changes.publish(JOBS_CHANGED)

    def webhook_attempts(self, job_id: str) -> list[WebhookAttempt]:
        return list(self._webhook_attempts.get(job_id, ()))
