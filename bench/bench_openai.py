"""Chat completions through the OpenAI route against the NeuroQ handler called directly.

    python bench/bench_openai.py [--requests 20] [--max-tokens 48]

Route: `POST /v2/{ep}/openai/v1/chat/completions` on a real `neuroq serve` with one
`neuroq worker neuroq.handler:handler --concurrency 8`, read as raw server-sent events over
loopback. Direct: the same requests handed to the handler's OpenAI path in this process
(`openai_values`, the values the job would yield), with no server, queue or HTTP in between.

- Concurrency 1, streamed, greedy: time to the first content token and generated tokens/s (from
  the usage chunk), per request; the overhead is route minus direct at the median.
- Concurrency 8, not streamed, sampled with a seed per request: chat requests/s, and the number
  of batches the worker ran them in (its micro-batcher shares one forward pass per step).

Both sides use the shipped default checkpoint on this machine's cores, in the same invocation.
Prints one JSON object, with the date and machine it ran on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

API_KEY = "bench-client-key"
WORKER_KEY = "bench-worker-key"
EP = "bench-openai"
PROMPTS = ["ChatGPTについて教えて", "こんにちは", "Pythonについて教えて", "What is a network?"]
#: the overhead the route may add to the first token at concurrency 1
TARGET_OVERHEAD_MS = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat_body(i: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "default",
        "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
        "max_tokens": max_tokens,
    }
    if stream:
        body.update(temperature=0, stream=True, stream_options={"include_usage": True})
    else:
        body.update(temperature=0.8, seed=i)
    return body


class Timing:
    """One streamed request: when its first content arrived and how many tokens it made."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.tokens = 0
        self.ended = 0.0

    def see(self, chunk: dict[str, Any]) -> None:
        if self.first is None and any(
            c.get("delta", {}).get("content") for c in chunk.get("choices", [])
        ):
            self.first = time.perf_counter()
        if chunk.get("usage"):
            self.tokens = int(chunk["usage"]["completion_tokens"])

    def result(self) -> tuple[float, float]:
        assert self.first is not None, "no content arrived"
        return (self.first - self.started) * 1000, self.tokens / (self.ended - self.started)


def sse_chunks(text: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in text.split("\n")
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


async def route_stream(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, float]:
    timing = Timing()
    async with http.stream("POST", "/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                timing.see(json.loads(line[6:]))
    timing.ended = time.perf_counter()
    return timing.result()


class NoRuntime:
    """Direct calls report nowhere: what the job would post is what the loop below reads."""

    def report_progress(self, job: dict[str, Any], data: dict[str, Any]) -> None:
        pass

    @asynccontextmanager
    async def stream(self, job: dict[str, Any]) -> AsyncIterator[Any]:
        async def post(chunk: Any) -> None:
            pass

        yield post


async def direct_stream(service: Any, body: dict[str, Any], n: int) -> tuple[float, float]:
    from neuroq.handler.openai import openai_values

    timing = Timing()
    raw = {"openai_route": "/v1/chat/completions", "openai_input": body}
    async for value in openai_values(service, {"id": f"direct-{n}"}, raw):
        for chunk in sse_chunks(value):
            timing.see(chunk)
    timing.ended = time.perf_counter()
    return timing.result()


async def direct_whole(service: Any, body: dict[str, Any], n: int) -> Any:
    from neuroq.handler.openai import openai_values

    raw = {"openai_route": "/v1/chat/completions", "openai_input": body}
    return [v async for v in openai_values(service, {"id": f"direct-c8-{n}"}, raw)]


def summary(samples: list[tuple[float, float]]) -> dict[str, float]:
    firsts = sorted(s[0] for s in samples)
    return {
        "first_token_ms_p50": round(statistics.median(firsts), 1),
        "first_token_ms_p90": round(firsts[int(0.9 * (len(firsts) - 1))], 1),
        "tokens_per_s": round(statistics.mean(s[1] for s in samples), 1),
    }


async def concurrent(requests: int, call: Any) -> float:
    """Seconds for `requests` calls with 8 in flight at a time."""
    limit = asyncio.Semaphore(8)

    async def one(i: int) -> None:
        async with limit:
            await call(i)

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return time.perf_counter() - started


async def measure(url: str, requests: int, max_tokens: int, data_dir: Path) -> dict[str, Any]:
    import torch

    from neuroq.config import HandlerSettings
    from neuroq.handler.actions import Service

    # The worker's torch threads (one by default), so both sides decode alike.
    torch.set_num_threads(HandlerSettings.from_env().torch_threads)
    service = Service(data_dir / "direct", runtime=NoRuntime())
    headers = {"Authorization": f"Bearer {API_KEY}"}
    base = f"{url}/v2/{EP}/openai/v1"
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as http:
        # Warm-up: both load the model, and the worker is polling, before any clock starts.
        await route_stream(http, chat_body(0, 4, stream=True))
        await direct_stream(service, chat_body(0, 4, stream=True), -1)
        route_c1, direct_c1 = [], []
        for i in range(requests):  # interleaved, so both see the same machine load
            body = chat_body(i, max_tokens, stream=True)
            route_c1.append(await route_stream(http, body))
            direct_c1.append(await direct_stream(service, body, i))

        async def route_whole(i: int) -> None:
            reply = await http.post("/chat/completions", json=chat_body(i, max_tokens, False))
            reply.raise_for_status()

        async def direct_c8(i: int) -> None:
            await direct_whole(service, chat_body(i, max_tokens, False), i)

        jobs = httpx.AsyncClient(base_url=f"{url}/v2", headers=headers, timeout=60)
        status = {"input": {"action": "status"}}
        before = (await jobs.post(f"/{EP}/runsync", json=status)).json()["output"]["batches"]
        many = requests * 2
        route_s = await concurrent(many, route_whole)
        after = (await jobs.post(f"/{EP}/runsync", json=status)).json()["output"]["batches"]
        await jobs.aclose()
        direct_batches = len(service.batcher.batch_sizes)
        direct_s = await concurrent(many, direct_c8)
        direct_batches = len(service.batcher.batch_sizes) - direct_batches
    service.sessions.close()
    route, direct = summary(route_c1), summary(direct_c1)
    overhead = route["first_token_ms_p50"] - direct["first_token_ms_p50"]
    return {
        "concurrency_1_streamed": {
            "requests": requests,
            "max_tokens": max_tokens,
            "route": route,
            "direct": direct,
            "first_token_overhead_ms_p50": round(overhead, 1),
            "target_overhead_ms": TARGET_OVERHEAD_MS,
            "target_met": overhead <= TARGET_OVERHEAD_MS,
        },
        "concurrency_8_whole": {
            "requests": many,
            "route_requests_per_s": round(many / route_s, 2),
            "route_batches_run": after - before,
            "direct_requests_per_s": round(many / direct_s, 2),
            "direct_batches_run": direct_batches,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-openai-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
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
    serve = [sys.executable, "-m", "neuroq", "serve", "--port", str(port), "--data-dir", str(tmp)]
    server = subprocess.Popen(serve, env=env, stdout=quiet, stderr=quiet)
    work = [sys.executable, "-m", "neuroq", "worker", "neuroq.handler:handler"]
    work += ["--url", url, "--endpoint", EP, "--concurrency", "8"]
    worker: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/v2/probe/health")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        worker = subprocess.Popen(work, env=env, stdout=quiet, stderr=quiet)
        report: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
        report.update(asyncio.run(measure(url, args.requests, args.max_tokens, tmp)))
        print(json.dumps(report, indent=2))
    finally:
        for proc in (worker, server):
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
