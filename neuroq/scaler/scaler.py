"""The scaler loop: observe, decide per endpoint, start and drain worker processes.

Every `interval_s` it reads the configured endpoints, their queues and the server's live
workers (one `Observation`), and for each endpoint with a handler or a command applies
`decide`; inside `neuroq serve` a job queued on such an endpoint while it has no worker (or a
settings change) brings the next look forward, so a cold start begins at once (looks stay
`MIN_GAP_S` apart). It acts
only on the processes it started itself, tracked here and in pidfiles under `state_dir`:

- a worker is registered `initializing` before it is started, so `/health` shows it while it
  loads; its first contact with the server makes it `ready`;
- a worker counts as idle from when it was last seen holding a job (or became ready);
- a worker that exits without being asked is replaced (its jobs return to the queue when its
  lease lapses); one that keeps dying before it reaches the server is restarted with a
  doubling back-off, so a broken handler does not spin;
- a change to an endpoint's handler, command, environment or concurrency drains its workers
  one tick later, and the rule starts new ones; an endpoint deleted or left without a handler
  and command has its workers drained.

One scaler per state directory: an exclusive lock on `state_dir/lock` makes a second scaler
(a second `serve` on the same data directory) decline to scale rather than double the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import time
from pathlib import Path
from typing import IO

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import now_ms
from neuroq.scaler.decide import Decision, WorkerView, decide
from neuroq.scaler.processes import WorkerProcess, end_stale_workers, launch_spec, start_worker
from neuroq.scaler.source import Observation, Source
from neuroq.store.base import QueueStats

log = logging.getLogger("neuroq.scaler")

#: a worker that exits on its own this soon, before it ever reached the server, failed to start
CRASH_WINDOW_S = 10.0
MAX_BACKOFF_S = 30.0
#: extra time past the drain grace before a stopping worker is killed
KILL_MARGIN_S = 5.0
#: the least time between two looks, however many jobs are queued meanwhile (a burst of
#: submits costs at most 1 / MIN_GAP_S looks a second)
MIN_GAP_S = 0.05


class ScalerBusy(RuntimeError):
    """Another scaler holds this state directory's lock."""


class Scaler:
    def __init__(
        self,
        source: Source,
        url: str,
        worker_key: str,
        state_dir: Path,
        *,
        interval_s: float = 0.5,
        stop_grace_s: float = 30.0,
        ping_interval_s: float = 10.0,
    ) -> None:
        self.source = source
        self.url = url
        self.worker_key = worker_key
        self.state_dir = state_dir
        self.interval_s = interval_s
        self.stop_grace_s = stop_grace_s
        #: heartbeats of `neuroq worker`s, well inside the server's worker_lost_s (the lease)
        self.ping_interval_s = ping_interval_s
        self.procs: dict[str, WorkerProcess] = {}
        #: the last decision per endpoint, for logs and tests
        self.decisions: dict[str, Decision] = {}
        self._lost: dict[str, int] = {}
        self._fail_streak: dict[str, int] = {}
        self._not_before_s: dict[str, float] = {}
        self._lock: IO[str] | None = None

    # -- life cycle --------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the state directory's lock, or raise ScalerBusy."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = open(self.state_dir / "lock", "w")  # noqa: SIM115 - held for the scaler's life
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise ScalerBusy(f"another scaler is running on {self.state_dir}") from None
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    async def run(self) -> None:
        """Scale until cancelled; then drain every worker (in-flight jobs finish)."""
        self.acquire()
        cleanup = asyncio.create_task(end_stale_workers(self.state_dir, self.stop_grace_s))
        try:
            loop = asyncio.get_running_loop()
            while True:
                looked = loop.time()
                try:
                    await self.tick()
                except Exception as exc:
                    log.warning("scaler tick failed: %s", exc)
                await self.source.pause(self.interval_s)
                rest = min(MIN_GAP_S, self.interval_s) - (loop.time() - looked)
                if rest > 0:
                    await asyncio.sleep(rest)
        finally:
            await asyncio.shield(self._shutdown(cleanup))

    async def _shutdown(self, cleanup: asyncio.Task[int]) -> None:
        await self.stop_all()
        with contextlib.suppress(Exception):
            await cleanup
        with contextlib.suppress(Exception):
            await self.source.aclose()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def signal_stop(self) -> None:
        """Tell every worker to drain now; safe from a signal handler."""
        for worker in self.procs.values():
            worker.drain()

    async def stop_all(self) -> None:
        """Drain every worker and wait for it (killed after the grace period)."""
        self.signal_stop()
        deadline = time.monotonic() + self.stop_grace_s + KILL_MARGIN_S
        for worker in list(self.procs.values()):
            try:
                await asyncio.wait_for(worker.proc.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("worker %s ignored SIGTERM; killing it", worker.worker_id)
            self._forget(worker)

    # -- one step ----------------------------------------------------------------------------

    async def tick(self) -> None:
        obs = await self.source.observe()
        self._reap(obs)
        configs = {c.endpoint_id: c for c in obs.configs if c.runs_workers}
        for worker in list(self.procs.values()):
            config = configs.get(worker.endpoint_id)
            if not worker.stopping and (config is None or launch_spec(config) != worker.spec):
                log.info("draining worker %s: its endpoint's settings changed", worker.worker_id)
                worker.drain()
        for config in configs.values():
            await self._scale(config, obs)

    def _reap(self, obs: Observation) -> None:
        """Forget workers that exited; count the ones nobody asked to stop; kill drains that
        overran; refresh idle clocks."""
        now_s = time.monotonic()
        for worker in list(self.procs.values()):
            if worker.proc.returncode is not None:
                if not worker.stopping:
                    self._worker_lost(worker, now_s)
                self._forget(worker)
                continue
            if worker.stopping:
                if now_s - worker.stop_sent_s > self.stop_grace_s + KILL_MARGIN_S:
                    log.warning(
                        "worker %s still running after its grace; killing it", worker.worker_id
                    )
                    worker.kill_group()
                continue
            info = obs.workers.get(worker.worker_id)
            if info is not None and info.state != "initializing":
                worker.was_ready = True
            if info is None or info.state == "initializing" or info.held_job_ids:
                worker.idle_since_ms = obs.now_ms

    def _worker_lost(self, worker: WorkerProcess, now_s: float) -> None:
        ep = worker.endpoint_id
        lived_s = (now_ms() - worker.started_ms) / 1000
        log.warning(
            "worker %s of endpoint %s exited with %s after %.1f s; replacing it",
            worker.worker_id,
            ep,
            worker.proc.returncode,
            lived_s,
        )
        self._lost[ep] = self._lost.get(ep, 0) + 1
        if not worker.was_ready and lived_s < CRASH_WINDOW_S:
            streak = self._fail_streak.get(ep, 0) + 1
            self._fail_streak[ep] = streak
            self._not_before_s[ep] = now_s + min(MAX_BACKOFF_S, 2.0 ** (streak - 1))
        else:
            self._fail_streak[ep] = 0

    def _forget(self, worker: WorkerProcess) -> None:
        worker.kill_group()  # what the worker forked and left behind
        worker.pidfile.unlink(missing_ok=True)
        self.procs.pop(worker.worker_id, None)
        worker.ended.set()

    async def _scale(self, config: EndpointConfig, obs: Observation) -> None:
        ep = config.endpoint_id
        mine = [w for w in self.procs.values() if w.endpoint_id == ep and not w.stopping]
        views = []
        for worker in mine:
            info = obs.workers.get(worker.worker_id)
            views.append(
                WorkerView(
                    worker.worker_id,
                    ready=info is not None and info.state != "initializing",
                    busy=info is not None and bool(info.held_job_ids),
                    idle_since_ms=worker.idle_since_ms,
                )
            )
        stats = obs.stats.get(ep)
        if stats is None:
            stats = QueueStats()
        decision = decide(config, stats, views, obs.now_ms, lost=self._lost.get(ep, 0))
        if decision != self.decisions.get(ep):
            log.debug("endpoint %s: %s", ep, decision)
        self.decisions[ep] = decision
        for worker_id in decision.stop:
            log.info("draining idle worker %s of endpoint %s", worker_id, ep)
            self.procs[worker_id].drain()
        if decision.start and time.monotonic() >= self._not_before_s.get(ep, 0.0):
            self._lost[ep] = 0
            for _ in range(decision.start):
                await self._start(config)

    async def _start(self, config: EndpointConfig) -> None:
        worker_id = f"{config.endpoint_id[:100]}-{secrets.token_hex(4)}"
        await self.source.register(config.endpoint_id, worker_id)
        worker = await start_worker(
            config,
            self.url,
            worker_id,
            self.worker_key,
            self.state_dir,
            self.stop_grace_s,
            self.ping_interval_s,
            now_ms(),
        )
        self.procs[worker_id] = worker
        log.info(
            "started worker %s (pid %d) for endpoint %s", worker_id, worker.pid, config.endpoint_id
        )
