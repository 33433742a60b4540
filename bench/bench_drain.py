"""Draining a queue with one worker: SQLite vs PostgreSQL, with few and many retained jobs.

    python bench/bench_drain.py [--jobs 2000] [--retained 100,10000] [--rounds 3] [--postgres URL]

For each number of retained jobs, `--rounds` times, each store in turn (SQLite always,
PostgreSQL when `--postgres` is given, in a fresh schema dropped afterwards), on this machine:

1. the store is filled through its own API with that many finished jobs (submitted, taken and
   finished, as a server that has been working keeps them until their retention runs out);
2. `neuroq serve` starts on it, and `--jobs` no-op jobs are queued through `/run`
   (16 client loops);
3. one `neuroq worker neuroq.demo_handlers:noop --concurrency 64 --burst` drains the queue and
   exits.

The drain rate is the number of jobs over the time from the first job's start to the last one's
end, as the store recorded them, so starting the worker is not counted. A drain of 2,000 jobs
lasts a fraction of a second, so one stall of a shared core moves its rate a lot: the stores
take turns round by round, and the report gives each figure's median over the rounds (and
every round's drain rate). Prints one JSON object: per store and retained count the drain
rate, the `/run` rate and latency, and the CPU time per job of the server, the worker and
(PostgreSQL) the database backends serving the server; then PostgreSQL's drain rate as a
fraction of SQLite's, and each store's rate with many retained jobs as a fraction of its rate
with few, both measured in this run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from bench_jobs import (
    API_KEY,
    backend_pids,
    bench_env,
    cpu_s,
    percentile,
    start_server,
    stop,
)

from neuroq.client.aio import AsyncEndpoint
from neuroq.jobs import NewJob, now_ms
from neuroq.store.base import JobStore
from neuroq.store.postgres import PostgresStore, split_schema
from neuroq.store.sqlite import SQLiteStore

ENDPOINT = "bench"
WORKER_CONCURRENCY = 64
SUBMIT_LOOPS = 16
#: how many store calls the seeding runs at once
SEED_PARALLEL = 8
DRAIN_TIMEOUT_S = 900.0


async def seed_retained(store: JobStore, count: int) -> None:
    """`count` finished jobs on the endpoint, made through the store's API so the table holds
    what real work leaves behind (including PostgreSQL's dead row versions)."""
    gate = asyncio.Semaphore(SEED_PARALLEL)

    async def submit() -> None:
        async with gate:
            await store.submit(NewJob(ENDPOINT, '{"seed":true}'), now_ms())

    async def finish(job_id: str) -> None:
        async with gate:
            await store.finish(job_id, output_json="{}", error_json=None, now_ms=now_ms())

    await asyncio.gather(*(submit() for _ in range(count)))
    while jobs := await store.take(ENDPOINT, "seed-worker", 500, now_ms(), 600_000):
        await asyncio.gather(*(finish(job.id) for job in jobs))


async def submit_queue(url: str, jobs: int) -> list[float]:
    """Queue `jobs` no-op jobs through `/run`; returns each submit's latency in s."""
    latencies: list[float] = []
    left = jobs
    loop = asyncio.get_running_loop()
    async with AsyncEndpoint(ENDPOINT, api_key=API_KEY, base_url=f"{url}/v2") as endpoint:

        async def one_loop() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                started = loop.time()
                await endpoint.run({"n": left})
                latencies.append(loop.time() - started)

        await asyncio.gather(*(one_loop() for _ in range(SUBMIT_LOOPS)))
    return latencies


def drain_span(store: str, data_dir: Path, url: str | None, since_ms: int) -> dict[str, Any]:
    """How many queued jobs completed, and the span from the first start to the last end."""
    sql = (
        "SELECT COUNT(*), MIN(started_at_ms), MAX(finished_at_ms) FROM jobs"
        " WHERE status = 'COMPLETED' AND created_at_ms >= {p}"
    )
    row: Any
    if store == "sqlite":
        with sqlite3.connect(data_dir / "neuroq.db") as conn:
            row = conn.execute(sql.format(p="?"), (since_ms,)).fetchone()
    else:
        assert url is not None
        libpq_url, schema = split_schema(url)
        with psycopg.connect(libpq_url, options=f"-c search_path={schema}") as conn:
            row = conn.execute(sql.format(p="%s"), (since_ms,)).fetchone()
    count, first, last = row
    return {"completed": int(count), "span_s": (last - first) / 1000 if count else None}


def run_one(store: str, retained: int, jobs: int, postgres: str | None) -> dict[str, Any]:
    env = bench_env()
    data_dir = Path(tempfile.mkdtemp(prefix="neuroq-bench-drain-"))
    schema = f"bench_drain_{secrets.token_hex(4)}"
    app_name = f"neuroq-{schema}"
    store_url = None
    if store == "postgresql":
        assert postgres is not None
        sep = "&" if "?" in postgres else "?"
        store_url = f"{postgres}{sep}schema={schema}&application_name={app_name}"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        began = time.monotonic()
        asyncio.run(_seed(store, data_dir, store_url, schema, retained))
        seed_s = time.monotonic() - began
        server, url = start_server(data_dir, env, store_url)
        procs.append(server)
        time.sleep(0.01)
        queued_from = now_ms()
        began = time.monotonic()
        latencies = asyncio.run(submit_queue(url, jobs))
        submit_s = time.monotonic() - began

        pids = {"server": [server.pid]}
        if store_url is not None and postgres is not None:
            pids["postgres"] = backend_pids(postgres, app_name)
        before = {pid: cpu_s(pid) for group in pids.values() for pid in group}
        cmd = [sys.executable, "-m", "neuroq", "worker", "neuroq.demo_handlers:noop"]
        cmd += ["--url", url, "--endpoint", ENDPOINT, "--concurrency", str(WORKER_CONCURRENCY)]
        cmd += ["--burst"]
        began = time.monotonic()
        worker = subprocess.Popen(cmd, env=env)
        procs.append(worker)
        # The worker's own CPU is read from its rusage as a reaped child.
        _, status, usage = os.wait4(worker.pid, 0)
        worker.returncode = os.waitstatus_to_exitcode(status)
        worker_wall_s = time.monotonic() - began
        if worker.returncode != 0:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        if store_url is not None and postgres is not None:
            pids["postgres"] = sorted(set(pids["postgres"]) | set(backend_pids(postgres, app_name)))
        cpu = {
            name: sum(cpu_s(pid) - before.get(pid, 0.0) for pid in group)
            for name, group in pids.items()
        }
        cpu["worker"] = usage.ru_utime + usage.ru_stime
        span = drain_span(store, data_dir, store_url, queued_from)
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
        if store_url is not None and postgres is not None:
            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    if span["completed"] != jobs or not span["span_s"]:
        raise RuntimeError(f"{store}, {retained} retained: {span['completed']} of {jobs} completed")
    return {
        "drain_jobs_per_s": round(jobs / span["span_s"], 1),
        "drain_s": round(span["span_s"], 2),
        "worker_wall_s": round(worker_wall_s, 2),
        "run_jobs_per_s": round(jobs / submit_s, 1),
        "run_p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "seed_s": round(seed_s, 1),
        "cpu_ms_per_job": {name: round(s * 1000 / jobs, 3) for name, s in cpu.items()},
    }


async def _seed(
    store: str, data_dir: Path, store_url: str | None, schema: str, retained: int
) -> None:
    opened: JobStore
    if store == "sqlite":
        opened = SQLiteStore(data_dir / "neuroq.db")
    else:
        assert store_url is not None
        libpq_url, _ = split_schema(store_url)
        opened = PostgresStore(libpq_url, schema=schema)
    await opened.open()
    try:
        await seed_retained(opened, retained)
    finally:
        await opened.close()


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds, and every round's drain rate."""
    first = rounds[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = {k: round(statistics.median(r[key][k] for r in rounds), 3) for k in value}
        else:
            out[key] = round(statistics.median(r[key] for r in rounds), 2)
    out["drain_jobs_per_s_rounds"] = [r["drain_jobs_per_s"] for r in rounds]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--retained", default="100,10000")
    parser.add_argument("--rounds", type=int, default=3, help="drains per store and level")
    parser.add_argument("--postgres", default=None, help="postgresql://... (default: SQLite only)")
    args = parser.parse_args()
    levels = [int(x) for x in args.retained.split(",")]
    stores = ["sqlite"] + (["postgresql"] if args.postgres else [])

    runs: dict[str, dict[str, Any]] = {store: {} for store in stores}
    for retained in levels:
        rounds: dict[str, list[dict[str, Any]]] = {store: [] for store in stores}
        for _ in range(args.rounds):
            for store in stores:
                rounds[store].append(run_one(store, retained, args.jobs, args.postgres))
        for store in stores:
            runs[store][str(retained)] = _medians(rounds[store])

    def rate(store: str, retained: int) -> float:
        return float(runs[store][str(retained)]["drain_jobs_per_s"])

    report: dict[str, Any] = {
        "benchmark": "drain a queue of no-op jobs with one worker at concurrency 64",
        "jobs": args.jobs,
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "runs": runs,
        "retained_ratio": {
            store: round(rate(store, levels[-1]) / rate(store, levels[0]), 3) for store in stores
        },
    }
    if args.postgres:
        report["postgresql_vs_sqlite"] = {
            str(n): round(rate("postgresql", n) / rate("sqlite", n), 3) for n in levels
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
