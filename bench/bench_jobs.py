"""No-op jobs through the full path: client -> server -> worker -> client, by two client paths.

    python bench/bench_jobs.py [--seconds 5] [--concurrency 1,8,64] [--store postgresql://...]
                               [--worker-concurrency 64] [--paths runsync,run-status]

The two paths (`--paths`, both by default), each driven by the project's asyncio client:

- `runsync`: `AsyncEndpoint.run_sync`, what `send_and_wait` does: `POST /runsync`, which holds
  until the job ends, then status long-polls only if the job outlives the hold;
- `run-status`: `AsyncEndpoint.run` then `AsyncJob.wait`, the path of the users' guide and of
  the RunPod SDK's `run()` + `status()`: `POST /run`, then `GET /status/{id}?wait=...` until the
  job is terminal.

Starts, in this order and on loopback: the baseline (bench/baseline_app.py, a bare ASGI app that
answers the client routes with fixed JSON: `/runsync` and `/status` COMPLETED at once, `/run`
IN_QUEUE, so it is the ceiling for any server), then `neuroq serve` (embedded SQLite, or
`--store`) with one `neuroq worker neuroq.demo_handlers:noop` of `--worker-concurrency` (64).
Each target is driven at each concurrency level (1, 8 and 64 loops), one path after the other
at each level, for `--seconds` each. Prints one JSON object with, per path: jobs/s, the latency
of one submit-and-wait (p50/p99, ms), HTTP requests per job, and the CPU milliseconds per job
of each process (client, server, worker and, with `--store`, the PostgreSQL backends serving
the server), for both targets; the ratio of our jobs/s to the baseline's; and what our path adds
to the baseline's p50 and p99 at concurrency 1. Everything shares this machine's cores, as it
would on a laptop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import psycopg

from neuroq.client._core import Request
from neuroq.client.aio import AsyncEndpoint

REPO = Path(__file__).resolve().parent.parent
API_KEY = "bench-client-key"
WORKER_KEY = "bench-worker-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(url)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_env() -> dict[str, str]:
    """The environment of every server and worker the benchmarks start."""
    env = dict(os.environ)
    env.update(
        {
            "NEUROQ_API_KEYS": API_KEY,
            "NEUROQ_WORKER_KEYS": WORKER_KEY,
            "NEUROQ_WORKER_KEY": WORKER_KEY,
            "NEUROQ_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def start_server(
    data_dir: Path, env: dict[str, str], store: str | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """`neuroq serve` on a free port, once it answers; returns the process and its URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "neuroq", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir)] + (["--store", store] if store else [])
    server = subprocess.Popen(cmd, env=env)
    wait_http(f"http://127.0.0.1:{port}/v2/bench/health", server)
    return server, f"http://127.0.0.1:{port}"


def start_noop_worker(
    url: str, endpoint: str, concurrency: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "neuroq", "worker", "neuroq.demo_handlers:noop", "--url", url]
    cmd += ["--endpoint", endpoint, "--concurrency", str(concurrency)]
    return subprocess.Popen(cmd, env=env)


#: the client paths `--paths` chooses from (see the module docstring)
PATHS = ("runsync", "run-status")


class CountingEndpoint(AsyncEndpoint):
    """An AsyncEndpoint that counts the HTTP requests it sends (resends included)."""

    requests = 0

    async def _send(
        self, request: Request, deadline: float | None = None
    ) -> tuple[Any, Mapping[str, str]]:
        self.requests += 1
        return await super()._send(request, deadline)


async def submit_and_wait(endpoint: AsyncEndpoint, path: str, payload: Any) -> dict[str, Any]:
    """One job by `path`, to its terminal status object."""
    if path == "runsync":
        return await endpoint.run_sync(payload, 60)
    if path == "run-status":
        job = await endpoint.run(payload)
        return await job.wait(60)
    raise ValueError(f"unknown path {path!r}; expected one of {PATHS}")


async def drive(
    base_urls: list[str], concurrency: int, seconds: float, path: str = "runsync"
) -> tuple[int, list[float], int]:
    """Submit-and-wait loops by `path` for `seconds`, loop i talking to
    base_urls[i % len(base_urls)]; returns (jobs completed, per-job latency in s, HTTP requests
    sent for them)."""
    latencies: list[float] = []
    count = 0
    endpoints = [CountingEndpoint("bench", api_key=API_KEY, base_url=url) for url in base_urls]
    try:
        # One warm-up job per server, so connection set-up and worker start are not measured.
        for endpoint in endpoints:
            await submit_and_wait(endpoint, path, {"warm": True})
            endpoint.requests = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds

        async def one_loop(endpoint: AsyncEndpoint) -> None:
            nonlocal count
            while loop.time() < deadline:
                started = loop.time()
                status = await submit_and_wait(endpoint, path, {"n": count})
                if status.get("status") != "COMPLETED":
                    raise RuntimeError(f"job ended {status}")
                latencies.append(loop.time() - started)
                count += 1

        await asyncio.gather(*(one_loop(endpoints[i % len(endpoints)]) for i in range(concurrency)))
    finally:
        for endpoint in endpoints:
            await endpoint.aclose()
    return count, latencies, sum(endpoint.requests for endpoint in endpoints)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, round(q * (len(ordered) - 1)))
    return ordered[index]


def cpu_s(pid: int | None = None) -> float:
    """User + system CPU seconds of process `pid` (None: this process) so far."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    base_urls: list[str],
    levels: list[int],
    seconds: float,
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
    path: str = "runsync",
    postgres_pids: Callable[[], list[int]] | None = None,
) -> dict[str, Any]:
    """jobs/s, latency and requests per job by `path` at each concurrency level, and the CPU
    milliseconds per job of this client, of each of `processes` and of the PostgreSQL backends
    `postgres_pids` lists (read from /proc where it exists)."""
    watched = {"client": None, **{name: p.pid for name, p in (processes or {}).items()}}
    can_read = Path("/proc/self/stat").exists()
    result: dict[str, Any] = {}
    for concurrency in levels:
        before = {name: cpu_s(pid) for name, pid in watched.items()} if can_read else {}
        pg_before = _group_cpu(postgres_pids()) if can_read and postgres_pids else {}
        count, latencies, requests = asyncio.run(drive(base_urls, concurrency, seconds, path))
        row: dict[str, Any] = {
            "jobs_per_s": round(count / seconds, 1),
            "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
            "jobs": count,
            "requests_per_job": round(requests / count, 3) if count else None,
        }
        if can_read and count:
            row["cpu_ms_per_job"] = {
                name: round((cpu_s(pid) - before[name]) * 1000 / count, 3)
                for name, pid in watched.items()
            }
            if postgres_pids:
                after = _group_cpu(postgres_pids())
                spent = sum(t - pg_before.get(pid, 0.0) for pid, t in after.items())
                row["cpu_ms_per_job"]["postgres"] = round(spent * 1000 / count, 3)
        result[str(concurrency)] = row
    return result


def measure_paths(
    base_urls: list[str],
    levels: list[int],
    seconds: float,
    paths: list[str],
    processes: dict[str, subprocess.Popen[bytes]] | None = None,
    postgres_pids: Callable[[], list[int]] | None = None,
) -> dict[str, dict[str, Any]]:
    """`measure` for each path, the paths taking turns at each level: path -> level -> row."""
    result: dict[str, dict[str, Any]] = {path: {} for path in paths}
    for level in levels:
        for path in paths:
            row = measure(base_urls, [level], seconds, processes, path, postgres_pids)
            result[path].update(row)
    return result


def _group_cpu(pids: list[int]) -> dict[int, float]:
    """CPU seconds so far of each of `pids` still alive."""
    spent: dict[int, float] = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # the backend exited
            spent[pid] = cpu_s(pid)
    return spent


def backend_pids(url: str, application_name: str) -> list[int]:
    """The PostgreSQL backends a server opened (they carry its application_name)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def with_application_name(url: str, name: str) -> str:
    """`url` with `application_name=name`, so the server's backends can be found."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


def added_ms(ours: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    """What our full path adds to one submit-and-wait at concurrency 1, over the bare app."""
    if "1" not in ours:
        return None
    return round(ours["1"][key] - baseline["1"][key], 2)


def compare(ours: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """One path's figures for both targets, side by side."""
    return {
        "neuroq": ours,
        "baseline_bare_asgi": baseline,
        "throughput_ratio_vs_baseline": {
            level: round(ours[level]["jobs_per_s"] / baseline[level]["jobs_per_s"], 3)
            for level in ours
            if baseline[level]["jobs_per_s"]
        },
        "added_latency_p50_ms_c1": added_ms(ours, baseline, "p50_ms"),
        "added_latency_p99_ms_c1": added_ms(ours, baseline, "p99_ms"),
        "median_of_levels_jobs_per_s": statistics.median(v["jobs_per_s"] for v in ours.values()),
    }


def parse_paths(text: str) -> list[str]:
    paths = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in paths if p not in PATHS]
    if unknown or not paths:
        raise argparse.ArgumentTypeError(f"--paths takes a comma list of {', '.join(PATHS)}")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--store", default=None, help="postgresql://... (default: SQLite)")
    parser.add_argument("--worker-concurrency", type=int, default=64)
    parser.add_argument(
        "--paths",
        type=parse_paths,
        default=list(PATHS),
        help=f"comma list of client paths to measure (default: {','.join(PATHS)})",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    paths: list[str] = args.paths

    env = bench_env()
    data_dir = Path(tempfile.mkdtemp(prefix="neuroq-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    schema: str | None = None
    try:
        base_port = free_port()
        baseline = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "bench.baseline_app:app", "--port", str(base_port),
             "--no-access-log", "--log-level", "warning"],
            cwd=REPO, env=env,
        )  # fmt: skip
        procs.append(baseline)
        wait_http(f"http://127.0.0.1:{base_port}/v2/bench/health", baseline)
        baseline_result = measure_paths(
            [f"http://127.0.0.1:{base_port}/v2"], levels, args.seconds, paths, {"server": baseline}
        )
        stop(baseline)

        store = args.store
        postgres_pids = None
        if store:
            # A fresh schema, dropped afterwards: rows left by earlier runs (dead ones too,
            # where autovacuum is off) would slow this one down.
            schema = f"bench_jobs_{secrets.token_hex(4)}"
            store = with_application_name(store, f"neuroq-{schema}")
            store = f"{store}&schema={schema}"
            postgres_pids = functools.partial(backend_pids, args.store, f"neuroq-{schema}")
        server, url = start_server(data_dir, env, store)
        procs.append(server)
        worker = start_noop_worker(url, "bench", args.worker_concurrency, env)
        procs.append(worker)
        neuroq_result = measure_paths(
            [f"{url}/v2"],
            levels,
            args.seconds,
            paths,
            {"server": server, "worker": worker},
            postgres_pids,
        )
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
        if schema is not None:
            with psycopg.connect(args.store, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    print(
        json.dumps(
            {
                "benchmark": "no-op jobs, client -> server -> worker -> client",
                "store": "postgresql" if args.store else "sqlite",
                "seconds_per_level": args.seconds,
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_avg_1min_after": round(os.getloadavg()[0], 2),
                },
                "paths": {
                    path: compare(neuroq_result[path], baseline_result[path]) for path in paths
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
