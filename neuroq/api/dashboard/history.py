"""The in-memory history behind the overview's queue-depth plot and per-minute rates.

Sampled by a task the app's lifespan runs (`History.run`), every `dashboard_sample_s`: queue depth
and jobs running from the store, jobs finished from this process's metrics. The depth of past
moments is stored nowhere else, and a table for it is not worth it, so this plot starts afresh
after a restart; the throughput and latency plots read finished jobs from the store instead
(`JobStore.finished_minutes`).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from neuroq.api.metrics import Metrics
from neuroq.jobs import JobStatus, now_ms
from neuroq.store.base import JobStore

log = logging.getLogger("neuroq.dashboard")

#: how far back the plots reach
PLOT_WINDOW_MS = 3_600_000
#: the window of the per-minute rates in the endpoint table
RATE_WINDOW_MS = 300_000


@dataclass
class Sample:
    """The whole server at one moment: jobs queued and running, and jobs finished so far."""

    at_ms: int
    queued: int
    running: int
    finished: int


class History:
    """Queue depth, jobs running and jobs finished, sampled in memory for the depth plot and the
    rates. Per process: a restart starts them afresh."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.samples: deque[Sample] = deque(maxlen=int(PLOT_WINDOW_MS / 1000 / interval_s) + 2)
        #: (at_ms, per (endpoint, status) finished totals), for rates over RATE_WINDOW_MS
        self.finished: deque[tuple[int, dict[tuple[str, str], int]]] = deque(
            maxlen=int(RATE_WINDOW_MS / 1000 / interval_s) + 2
        )

    def record(self, at_ms: int, counts: dict[str, dict[str, int]], metrics: Metrics) -> None:
        queued = sum(c.get(JobStatus.IN_QUEUE.value, 0) for c in counts.values())
        running = sum(c.get(JobStatus.IN_PROGRESS.value, 0) for c in counts.values())
        self.samples.append(Sample(at_ms, queued, running, sum(metrics.finished.values())))
        self.finished.append((at_ms, dict(metrics.finished)))

    def rate_per_min(self, metrics: Metrics, endpoint_id: str, status: str, at_ms: int) -> float:
        """Jobs per minute that reached `status` over the rate window (or since the first
        sample, when the server is younger than that)."""
        if not self.finished:
            return 0.0
        then_ms, then = next(
            ((t, c) for t, c in self.finished if t >= at_ms - RATE_WINDOW_MS), self.finished[-1]
        )
        elapsed_min = max(at_ms - then_ms, 1000) / 60_000
        key = (endpoint_id, status)
        return (metrics.finished.get(key, 0) - then.get(key, 0)) / elapsed_min

    def depth(self, counts: dict[str, dict[str, int]], now: int) -> list[tuple[int, float]]:
        """Queue depth (at_ms, jobs) per sample, then `counts` as of `now`."""
        queued_now = sum(c.get(JobStatus.IN_QUEUE.value, 0) for c in counts.values())
        points = [(s.at_ms, float(s.queued)) for s in self.samples]
        return [*points, (now, float(queued_now))]

    async def run(self, store: JobStore, metrics: Metrics) -> None:
        """Sample every `interval_s` until cancelled; a failed sample is logged and skipped."""
        while True:
            try:
                at = now_ms()
                self.record(at, await store.job_counts(at), metrics)
            except Exception:
                log.exception("dashboard sample failed; trying again in %.0f s", self.interval_s)
            await asyncio.sleep(self.interval_s)
