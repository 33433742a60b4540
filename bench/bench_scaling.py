"""No-op job throughput on one vs two API processes, and on SQLite vs PostgreSQL, in one run.

    python bench/bench_scaling.py [--seconds 5] [--concurrency 1,16,64] [--postgres URL]

Three set-ups, measured one after the other on this machine:

- `sqlite_1_api`: one `neuroq serve` on SQLite (the default store);
- `postgres_1_api`: one `neuroq serve` on PostgreSQL;
- `postgres_2_api`: two `neuroq serve` processes sharing one PostgreSQL schema, the client loops
  split evenly between them, as behind a round-robin load balancer.

Each set-up has the same two `neuroq worker neuroq.demo_handlers:noop` processes (concurrency 32
each; with two API processes, one worker on each), so only the API side changes. The client is
bench_jobs.py's: `AsyncEndpoint.run_sync` loops, the work of `send_and_wait`, for
`--seconds` per concurrency level. PostgreSQL set-ups get a fresh schema, dropped afterwards.
Prints one JSON object: jobs/s and latency per set-up and level, the ratios, and the machine
(cores and load average, since every process shares them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench_jobs import bench_env, measure, start_noop_worker, start_server, stop

REPO = Path(__file__).resolve().parent.parent
ENDPOINT = "bench"
WORKERS = 2
WORKER_CONCURRENCY = 32


def run_setup(
    store: str | None, api_processes: int, levels: list[int], seconds: float
) -> dict[str, Any]:
    """Start the servers and workers of one set-up, measure, stop everything."""
    env = bench_env()
    data_dir = Path(tempfile.mkdtemp(prefix="neuroq-bench-scaling-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls: list[str] = []
        for n in range(api_processes):
            # Each process its own data dir: only the store is shared.
            server, url = start_server(data_dir / f"api-{n}", env, store)
            procs.append(server)
            urls.append(url)
        for n in range(WORKERS):
            procs.append(start_noop_worker(urls[n % len(urls)], ENDPOINT, WORKER_CONCURRENCY, env))
        load_before = os.getloadavg()[0]
        result = measure([f"{url}/v2" for url in urls], levels, seconds)
        return {
            "api_processes": api_processes,
            "load_avg_1min_before": round(load_before, 2),
            "levels": result,
        }
    finally:
        for proc in reversed(procs):
            stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


def drop_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Throughput of a over b per concurrency level."""
    return {
        level: round(a["levels"][level]["jobs_per_s"] / b["levels"][level]["jobs_per_s"], 3)
        for level in a["levels"]
        if b["levels"][level]["jobs_per_s"]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "NEUROQ_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
        help="database for the PostgreSQL set-ups (a fresh schema in it is used and dropped)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]

    setups: dict[str, Any] = {"sqlite_1_api": run_setup(None, 1, levels, args.seconds)}
    for api_processes in (1, 2):
        schema = f"bench_{secrets.token_hex(4)}"
        sep = "&" if "?" in args.postgres else "?"
        try:
            setups[f"postgres_{api_processes}_api"] = run_setup(
                f"{args.postgres}{sep}schema={schema}", api_processes, levels, args.seconds
            )
        finally:
            drop_schema(args.postgres, schema)

    print(
        json.dumps(
            {
                "benchmark": "no-op jobs, client -> server(s) -> worker -> client",
                "seconds_per_level": args.seconds,
                "workers": f"{WORKERS} x neuroq.demo_handlers:noop, concurrency "
                f"{WORKER_CONCURRENCY} each",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                    "load_avg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
                },
                "setups": setups,
                "throughput_ratio": {
                    "postgres_2_api_vs_1_api": ratios(
                        setups["postgres_2_api"], setups["postgres_1_api"]
                    ),
                    "postgres_vs_sqlite_1_api": ratios(
                        setups["postgres_1_api"], setups["sqlite_1_api"]
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
