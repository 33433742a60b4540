"""What the scaler decides on, read either from the store (inside `neuroq serve`) or over HTTP
from a server (`neuroq scaler --url`), and the per-endpoint report the metrics route serves.

Both sources give the same `Observation`, so the scaler itself does not know where it runs.
Between looks the scaler waits on its source: the store's source wakes it at once when a job is
queued on an endpoint it scales that has no worker yet, or when endpoint settings change in
this process, so a cold start does not also wait for the next look; the HTTP source only
sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from neuroq.endpoints import SETTABLE, EndpointConfig, desired_workers
from neuroq.jobs import now_ms
from neuroq.scaler.decide import oldest_wait_s
from neuroq.store.base import JobStore, QueueStats, WorkerInfo, queue_topic

log = logging.getLogger(__name__)

#: published on the store's notifier when an endpoint's settings change (endpoint routes)
SETTINGS_TOPIC = "endpoint-settings"


@dataclass(frozen=True)
class Observation:
    configs: list[EndpointConfig]
    stats: dict[str, QueueStats]
    #: every live worker the server knows of, by id
    workers: dict[str, WorkerInfo]
    now_ms: int


class Source(Protocol):
    async def observe(self) -> Observation: ...

    async def pause(self, timeout_s: float) -> None:
        """Wait `timeout_s` before the next look, or less when there is news."""
        ...

    async def register(self, endpoint_id: str, worker_id: str) -> None:
        """Show a worker that is starting as `initializing` in the endpoint's health."""
        ...

    async def aclose(self) -> None: ...


class StoreSource:
    """The scaler inside `neuroq serve`: reads the store directly."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        #: topic -> its version when last observed: what `pause` wakes on
        self._seen: dict[str, int] = {}

    async def observe(self) -> Observation:
        notifier = self.store.notifier
        configs = await self.store.list_endpoints()
        workers = {w.worker_id: w for w in await self.store.list_workers()}
        # Only an endpoint with no worker at all is woken by a submit (a cold start); where
        # workers run they take the job, and a look per submit under load would be waste.
        # Versions are read before the queue counts, so a job queued after them moves one.
        served = {w.endpoint_id for w in workers.values()}
        topics = [
            queue_topic(c.endpoint_id)
            for c in configs
            if c.runs_workers and c.endpoint_id not in served
        ]
        self._seen = {t: notifier.version(t) for t in [SETTINGS_TOPIC, *topics]}
        stats = await self.store.queue_stats()
        return Observation(configs, stats, workers, now_ms())

    async def pause(self, timeout_s: float) -> None:
        """Until a job is queued on a scaled endpoint without workers, settings change, or
        `timeout_s`."""
        notifier = self.store.notifier
        waits = [
            asyncio.ensure_future(notifier.wait(topic, version, timeout_s))
            for topic, version in self._seen.items()
        ]
        if not waits:
            await asyncio.sleep(timeout_s)
            return
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    async def register(self, endpoint_id: str, worker_id: str) -> None:
        await self.store.touch_worker(endpoint_id, worker_id, now_ms(), state="initializing")

    async def aclose(self) -> None:
        return None


class HTTPSource:
    """`neuroq scaler --url`: reads a server's endpoint routes with a client key; registers
    starting workers with a worker key."""

    def __init__(self, url: str, client_key: str, worker_key: str, timeout_s: float = 10.0) -> None:
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s)
        self.client_headers = {"Authorization": f"Bearer {client_key}"}
        self.worker_headers = {"Authorization": worker_key}
        #: settings a newer server sent that this version does not know, logged once each
        self.unknown_settings: set[str] = set()

    async def _get(self, path: str) -> Any:
        reply = await self.client.get(path, headers=self.client_headers)
        reply.raise_for_status()
        return reply.json()

    async def observe(self) -> Observation:
        listed = await self._get("/endpoints")
        configs = [
            EndpointConfig.from_wire(item["name"], self._settable(item))
            for item in listed["endpoints"]
        ]
        stats: dict[str, QueueStats] = {}
        workers: dict[str, WorkerInfo] = {}
        for config in configs:
            if not config.runs_workers:
                continue
            report = await self._get(f"/endpoints/{config.endpoint_id}/metrics")
            stats[config.endpoint_id] = QueueStats(
                report["queued"], report["running"], report["oldestQueuedAt"]
            )
            for item in (await self._get(f"/endpoints/{config.endpoint_id}/workers"))["workers"]:
                workers[item["id"]] = WorkerInfo(
                    item["id"],
                    config.endpoint_id,
                    item["state"],
                    item["lastSeen"],
                    tuple(item["jobs"]),
                )
        return Observation(configs, stats, workers, now_ms())

    def _settable(self, wire: dict[str, Any]) -> dict[str, Any]:
        """The settings this version knows: a newer server may send more, which a scaler
        that ignores them still runs correctly with (the route itself refuses unknown keys
        from clients, where one is a typo)."""
        unknown = set(wire) - SETTABLE - {"name", "createdAt", "updatedAt"}
        for key in sorted(unknown - self.unknown_settings):
            log.debug("ignoring endpoint setting %r, unknown to this version", key)
        self.unknown_settings |= unknown
        return {k: v for k, v in wire.items() if k in SETTABLE}

    async def pause(self, timeout_s: float) -> None:
        await asyncio.sleep(timeout_s)

    async def register(self, endpoint_id: str, worker_id: str) -> None:
        reply = await self.client.post(
            f"/endpoints/{endpoint_id}/workers/{worker_id}", headers=self.worker_headers
        )
        reply.raise_for_status()

    async def aclose(self) -> None:
        await self.client.aclose()


def endpoint_report(
    endpoint_id: str,
    config: EndpointConfig | None,
    stats: QueueStats,
    workers: list[WorkerInfo],
    now: int,
) -> dict[str, Any]:
    """The scaler's inputs and decision for one endpoint, as the metrics route serves them
    (KEDA's metrics-api scaler reads one field of it; see docs/scaling.md).

    `desiredWorkers` is the rule applied as an external autoscaler would apply it: the current
    count is the workers holding a job, so the figure falls back once the queue is served and
    idle workers are not counted as wanted (KEDA's cooldown then plays the idle timeout), except
    the endpoint's `workersSpare`."""
    live = [w for w in workers if w.state != "recycling"]
    busy = sum(1 for w in live if w.held_job_ids)
    rule = config if config is not None else EndpointConfig(endpoint_id)
    wait_s = oldest_wait_s(stats, now)
    desired = desired_workers(
        rule,
        queued=stats.queued,
        running=stats.running,
        oldest_wait_s=wait_s,
        current=busy,
        busy=busy,
        external=True,
    )
    return {
        "endpoint": endpoint_id,
        "configured": config is not None,
        "queued": stats.queued,
        "running": stats.running,
        "jobs": stats.queued + stats.running,
        "oldestQueuedAt": stats.oldest_queued_at_ms,
        "oldestQueueDelaySeconds": round(wait_s, 3),
        "workers": len(live),
        "busyWorkers": busy,
        "desiredWorkers": desired,
        "workersMin": rule.workers_min,
        "workersMax": rule.workers_max,
        "workersSpare": rule.workers_spare,
        "scalerType": rule.scaler_type.value,
        "scalerValue": rule.scaler_value,
    }
