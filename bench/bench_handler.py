"""Generate jobs through the full job path: client -> server -> `neuroq worker
neuroq.handler:handler` -> client, with one worker at concurrency 1 and then 8 (batched).

    python bench/bench_handler.py [--jobs 24] [--max-length 40]

Both runs use the same prompts (each with its own seed and `stop_at_eos` left on, so replies end
where the model stops) on the shipped default checkpoint, in the same invocation, on this
machine's cores. Every job is submitted at once and the clock runs until the last result is in.
Prints one JSON object: jobs/s, generated tokens/s and the batch sizes the worker reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

API_KEY = "bench-client-key"
WORKER_KEY = "bench-worker-key"
PROMPTS = ["ChatGPTについて教えて", "こんにちは", "Pythonについて教えて", "What is a network?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_done(http: httpx.Client, ep: str, job_id: str) -> dict[str, Any]:
    while True:
        reply = http.get(f"/{ep}/status/{job_id}", params={"wait": 5000}).json()
        if reply["status"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            return dict(reply)


def run(
    http: httpx.Client, ep: str, jobs: int, max_length: int, extra: dict[str, Any]
) -> dict[str, Any]:
    inputs = [
        {"prompt": PROMPTS[i % len(PROMPTS)], "max_length": max_length, "seed": i, **extra}
        for i in range(jobs)
    ]
    # One warm-up job loads the model before the clock starts.
    job_id = http.post(f"/{ep}/run", json={"input": inputs[0]}).json()["id"]
    assert wait_done(http, ep, job_id)["status"] == "COMPLETED"
    started = time.perf_counter()
    ids = [http.post(f"/{ep}/run", json={"input": i}).json()["id"] for i in inputs]
    results = [wait_done(http, ep, i) for i in ids]
    elapsed = time.perf_counter() - started
    failed = [r for r in results if r["status"] != "COMPLETED"]
    if failed:
        raise SystemExit(f"{len(failed)} jobs failed: {failed[0]}")
    tokens = sum(r["output"]["num_tokens"] for r in results)
    job_id = http.post(f"/{ep}/run", json={"input": {"action": "status"}}).json()["id"]
    batches = wait_done(http, ep, job_id)["output"]["batches"]
    return {
        "jobs": jobs,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(jobs / elapsed, 2),
        "tokens_per_s": round(tokens / elapsed, 1),
        "tokens": tokens,
        "batches_run": batches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=40)
    parser.add_argument("--no-stream", action="store_true", help="jobs send stream: false")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-handler-"))
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "NEUROQ_API_KEYS": API_KEY,
            "NEUROQ_WORKER_KEYS": WORKER_KEY,
            "NEUROQ_WORKER_KEY": WORKER_KEY,
            "NEUROQ_DATA_DIR": str(tmp / "data"),
        }
    )
    quiet = subprocess.DEVNULL
    server = subprocess.Popen(
        [sys.executable, "-m", "neuroq", "serve", "--port", str(port), "--data-dir", str(tmp)],
        env=env,
        stdout=quiet,
        stderr=quiet,
    )
    url = f"http://127.0.0.1:{port}"
    report: dict[str, Any] = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        http = httpx.Client(
            base_url=f"{url}/v2", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
        )
        for _ in range(300):
            try:
                http.get("/probe/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        extra = {"stream": False} if args.no_stream else {}
        for concurrency in (1, 8):
            ep = f"bench-c{concurrency}"
            cmd = [sys.executable, "-m", "neuroq", "worker", "neuroq.handler:handler"]
            cmd += ["--url", url, "--endpoint", ep, "--concurrency", str(concurrency)]
            worker = subprocess.Popen(
                cmd,
                env=env,
                stdout=quiet,
                stderr=quiet,
            )
            try:
                report[f"concurrency_{concurrency}"] = run(
                    http, ep, args.jobs, args.max_length, extra
                )
            finally:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)
        c1, c8 = report["concurrency_1"], report["concurrency_8"]
        report["speedup_jobs_per_s"] = round(c8["jobs_per_s"] / c1["jobs_per_s"], 2)
        print(json.dumps(report, indent=2))
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
