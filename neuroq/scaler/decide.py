"""The scaler's decision for one endpoint: how many workers to start and which to stop.

A pure function of what the scaler observed and the time, so it is tested with a simulated
clock. Scaling up follows the endpoint's rule (`neuroq.endpoints.desired_workers`); scaling
down is per worker: only a worker that has held no job for `idleTimeout` seconds is stopped,
and never below what the rule still wants (`workersMin` at least, and `workersSpare` idle
workers beyond the busy ones). A worker over `workersMax`
(the setting was lowered) is stopped at once, idle ones first; stopping always means a
drain (SIGTERM: in-flight jobs finish), never a kill.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from neuroq.endpoints import EndpointConfig, ScalerType, desired_workers, spare_floor
from neuroq.store.base import QueueStats


@dataclass(frozen=True)
class WorkerView:
    """One running worker process of the endpoint, as the scaler last saw it."""

    worker_id: str
    #: it has contacted the server (its state there is no longer "initializing")
    ready: bool
    #: it holds at least one job now
    busy: bool
    #: the last time it was seen busy, or when it became ready; the idle timeout counts from it
    idle_since_ms: int


@dataclass(frozen=True)
class Decision:
    #: the size the endpoint's fleet is steered to
    desired: int
    #: how many workers to start now
    start: int
    #: workers to drain and stop now, longest idle first
    stop: tuple[str, ...] = ()


def oldest_wait_s(stats: QueueStats, now_ms: int) -> float:
    """How long the job that has waited longest has been queued (0 when none waits)."""
    if stats.oldest_queued_at_ms is None:
        return 0.0
    return max(0.0, (now_ms - stats.oldest_queued_at_ms) / 1000)


def decide(
    config: EndpointConfig,
    stats: QueueStats,
    workers: Sequence[WorkerView],
    now_ms: int,
    *,
    lost: int = 0,
) -> Decision:
    """What to do now. `workers` are the live ones not already being stopped; `lost` counts
    workers that ended without being asked (a crash, kill -9) since the last decision: the rule
    sees them as still wanted, so each is replaced while the rule still wants it."""
    current = len(workers)
    starting = sum(1 for w in workers if not w.ready)
    busy = sum(1 for w in workers if w.busy)
    spares = spare_floor(config, busy) if config.runs_workers else 0
    wanted = desired_workers(
        config,
        queued=stats.queued,
        running=stats.running,
        oldest_wait_s=oldest_wait_s(stats, now_ms),
        current=current + lost,
    )
    if config.scaler_type is ScalerType.QUEUE_DELAY and starting and not lost:
        # One worker at a time: the queue delay says nothing new until the worker already on
        # its way has started and taken its share.
        wanted = min(wanted, max(current, config.workers_min))
    wanted = max(wanted, spares)
    if wanted > current:
        return Decision(wanted, wanted - current)

    # Over workersMax: stop the excess at once, idle workers first.
    stop: list[str] = []
    if current > config.workers_max:
        by_idleness = sorted(workers, key=lambda w: (w.busy, w.idle_since_ms))
        stop = [w.worker_id for w in by_idleness[: current - config.workers_max]]
    # Idle workers past their timeout, down to what the rule still needs.
    keep = max(config.workers_min, spares, _still_needed(config, stats))
    idle = sorted(
        (
            w
            for w in workers
            if w.ready
            and not w.busy
            and w.worker_id not in stop
            and now_ms - w.idle_since_ms >= config.idle_timeout_s * 1000
        ),
        key=lambda w: w.idle_since_ms,
    )
    room = current - len(stop) - keep
    stop += [w.worker_id for w in idle[: max(0, room)]]
    return Decision(current - len(stop), 0, tuple(stop))


def _still_needed(config: EndpointConfig, stats: QueueStats) -> int:
    """Workers the rule needs regardless of how many there are: REQUEST_COUNT's quotient; for
    QUEUE_DELAY every worker while jobs wait (an idle one is about to take one)."""
    if config.scaler_type is ScalerType.REQUEST_COUNT:
        return math.ceil((stats.queued + stats.running) / config.scaler_value)
    return config.workers_max if stats.queued else 0
