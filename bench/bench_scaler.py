"""The scaler's costs: cold start, and a burst served by a fleet scaled from zero against a fleet
of the same size started beforehand.

    python bench/bench_scaler.py [--jobs 200] [--job-ms 100] [--trials 5] [--generate-budget-s 120]
                                 [--idle-s 60] [--idle-timeout 5]

- `cold_start`: an endpoint at zero workers (`neuroq.demo_handlers:noop`, the scaler's default
  0.5 s interval between looks, which a submit cuts short) gets one `runsync`; the time to its
  result, median of `--trials`, each from zero again (the idle timeout is 1 s).
- `generate_cold_start`: the same with the NeuroQ handler (`neuroq.handler:handler`, the shipped
  default model, a fresh data directory) and one greedy `generate` of GENERATE_TOKENS tokens:
  the worker's start-up, importing torch, loading the model (the handler's warm-up, before its
  first take) and the reply. `--trials` runs, but
  none is started once `--generate-budget-s` has passed after the third, so a slow machine
  reports a median of 3 (the JSON gives the count).
- `burst`: `--jobs` jobs of `--job-ms` each (`neuroq.demo_handlers:sleep`) submitted at once.
  `scaled`: workersMin 0, workersMax 4, REQUEST_COUNT 1, so the scaler starts four workers at
  the first look; `fixed`: four `neuroq worker` processes started and ready before the burst.
  Completion is from the first submit to the last result. Worker-seconds are charged over the
  same kind of window for both: from the first submit to `--idle-s` seconds after the last
  result (a burst followed by idle). The scaled fleet's integrate its live worker processes
  (sampled every 20 ms; its endpoint's idleTimeout is `--idle-timeout`), which are gone
  after the idle timeout and the drain; the fixed fleet's four workers live the whole window.

Prints one JSON object, with the date and machine it ran on. Every process shares the
machine's cores, so figures are indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from bench_jobs import API_KEY, bench_env, start_server, stop

from neuroq.client import AsyncEndpoint
from neuroq.scaler.processes import MARKER_VAR

FLEET = 4
#: the generate of the NeuroQ cold start: short and greedy, so the figure is mostly start-up
GENERATE_INPUT = {"action": "generate", "prompt": "Hello", "max_length": 20, "temperature": 0}
GENERATE_TOKENS = GENERATE_INPUT["max_length"]


def _configure(url: str, ep: str, **settings: Any) -> None:
    reply = httpx.put(
        f"{url}/endpoints/{ep}", json=settings, headers={"Authorization": API_KEY}, timeout=10
    )
    reply.raise_for_status()


def _scaled_workers(state_dir: Path, ep: str) -> int:
    """Live worker processes the scaler started for `ep` (found by their marker)."""
    prefix = f"{MARKER_VAR}={state_dir.resolve()}:{ep}-".encode()
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if stat[0] not in ("Z", "X") and any(v.startswith(prefix) for v in environ.split(b"\0")):
            count += 1
    return count


def _wait(check: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark state not reached")
        time.sleep(0.02)


async def _burst(url: str, ep: str, jobs: int, job_ms: int) -> float:
    """Submit every job at once and wait for all; seconds from the first submit to the last."""
    endpoint = AsyncEndpoint(ep, api_key=API_KEY, base_url=f"{url}/v2")
    started = time.monotonic()
    submitted = await asyncio.gather(
        *(endpoint.run({"seconds": job_ms / 1000, "n": n}) for n in range(jobs))
    )
    finals = await asyncio.gather(*(job.wait(120) for job in submitted))
    elapsed = time.monotonic() - started
    assert all(f["status"] == "COMPLETED" for f in finals), finals
    await endpoint.aclose()
    return elapsed


async def _cold_start(url: str, ep: str = "cold", job_input: Any = None) -> float:
    """Seconds from a runsync at zero workers to its result."""
    async with AsyncEndpoint(ep, api_key=API_KEY, base_url=f"{url}/v2") as endpoint:
        started = time.monotonic()
        reply = await endpoint.run_sync(job_input or {}, 300)
        elapsed = time.monotonic() - started
    assert reply["status"] == "COMPLETED", reply
    return elapsed


def _cold_starts(
    url: str, state_dir: Path, ep: str, job_input: Any, trials: int, budget_s: float
) -> list[float]:
    """Up to `trials` cold starts of `ep`, each from zero workers; none begun after `budget_s`
    once three are done."""
    times: list[float] = []
    started = time.monotonic()
    while len(times) < trials:
        if len(times) >= 3 and time.monotonic() - started > budget_s:
            break
        _wait(lambda: _scaled_workers(state_dir, ep) == 0, 120)
        times.append(asyncio.run(_cold_start(url, ep, job_input)))
    return times


def _summary(times: list[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(times), 3),
        "trials": [round(t, 3) for t in times],
    }


class _Sampler:
    """Integrates a process count over time in a thread (worker-seconds)."""

    def __init__(self, count: Any) -> None:
        self.worker_s = 0.0
        self.started = time.monotonic()
        self._count = count
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = self.started
        while not self._stop.wait(0.02):
            now = time.monotonic()
            self.worker_s += self._count() * (now - last)
            last = now

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.worker_s

    def until_idle_end(self, busy_s: float, idle_s: float) -> float:
        """Worker-seconds from the start to `idle_s` after `busy_s`: sampled until the count is
        zero (nothing starts a worker again without jobs) or the window ends."""
        end = self.started + busy_s + idle_s
        while self._count() and time.monotonic() < end:
            time.sleep(0.02)
        return self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--job-ms", type=int, default=100)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--generate-budget-s", type=float, default=120.0)
    parser.add_argument("--idle-s", type=float, default=60.0, help="idle window after a burst")
    parser.add_argument("--idle-timeout", type=int, default=5, help="the scaled idleTimeout")
    args = parser.parse_args()
    env = bench_env()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        state_dir = data_dir / "scaler"
        server, url = start_server(data_dir, env)
        fixed_workers: list[subprocess.Popen[bytes]] = []
        try:
            # cold start to the first result
            _configure(url, "cold", handler="neuroq.demo_handlers:noop", idleTimeout=1)
            cold = _cold_starts(url, state_dir, "cold", {}, args.trials, float("inf"))

            # the same with the NeuroQ handler and its shipped model
            _configure(
                url,
                "neuroq",
                handler="neuroq.handler:handler",
                idleTimeout=1,
                env={"NEUROQ_DATA_DIR": str(Path(tmp) / "neuroq")},
            )
            generate = _cold_starts(
                url, state_dir, "neuroq", GENERATE_INPUT, args.trials, args.generate_budget_s
            )

            # the burst, scaled from zero
            _configure(
                url,
                "scaled",
                handler="neuroq.demo_handlers:sleep",
                workersMax=FLEET,
                idleTimeout=args.idle_timeout,
                scalerType="REQUEST_COUNT",
                scalerValue=1,
            )
            sampler = _Sampler(lambda: _scaled_workers(state_dir, "scaled"))
            scaled_s = asyncio.run(_burst(url, "scaled", args.jobs, args.job_ms))
            scaled_worker_s = sampler.until_idle_end(scaled_s, args.idle_s)

            # the same burst on a fleet started beforehand
            fixed_workers = [_start_sleep_worker(url, env) for _ in range(FLEET)]
            _wait(lambda: _ready_workers(url, "fixed") == FLEET)
            fixed_s = asyncio.run(_burst(url, "fixed", args.jobs, args.job_ms))
        finally:
            for proc in fixed_workers:
                stop(proc)
            stop(server)
    ideal_s = args.jobs * args.job_ms / 1000 / FLEET
    fixed_worker_s = FLEET * (fixed_s + args.idle_s)
    print(
        json.dumps(
            {
                "cold_start_s": {"handler": "neuroq.demo_handlers:noop", **_summary(cold)},
                "generate_cold_start_s": {
                    "handler": "neuroq.handler:handler",
                    "input": GENERATE_INPUT,
                    **_summary(generate),
                },
                "burst": {
                    "jobs": args.jobs,
                    "job_ms": args.job_ms,
                    "ideal_s": ideal_s,
                    "scaled_0_to_4_s": round(scaled_s, 3),
                    "fixed_4_s": round(fixed_s, 3),
                    "ratio": round(scaled_s / fixed_s, 3),
                    "target_ratio": 1.3,
                },
                "worker_s": {
                    "window": "first submit to idle_s after the last result",
                    "idle_s": args.idle_s,
                    "scaled_idle_timeout_s": args.idle_timeout,
                    "scaled": round(scaled_worker_s, 2),
                    "fixed": round(fixed_worker_s, 2),
                    "scaled_over_fixed": round(scaled_worker_s / fixed_worker_s, 3),
                },
                "date": time.strftime("%Y-%m-%d"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "load_avg": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version(),
                },
            },
            indent=2,
        )
    )


def _start_sleep_worker(url: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "neuroq", "worker", "neuroq.demo_handlers:sleep", "--url", url]
    cmd += ["--endpoint", "fixed"]
    return subprocess.Popen(cmd, env=env)


def _ready_workers(url: str, ep: str) -> int:
    reply = httpx.get(f"{url}/v2/{ep}/health", headers={"Authorization": API_KEY}, timeout=10)
    workers: dict[str, int] = reply.json()["workers"]
    return workers["ready"] + workers["running"]


if __name__ == "__main__":
    main()
