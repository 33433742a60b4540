"""Worker-test fixtures: an in-memory fake of the server's worker routes, reached through
httpx.MockTransport, so the runtime's protocol behaviour is tested without the real server."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest

from neuroq.http_retry import Backoff
from neuroq.worker.handlers import Handler, classify
from neuroq.worker.runtime import Worker
from neuroq.worker.transport import Transport


@dataclass
class Call:
    kind: str
    job_id: str | None
    params: dict[str, str]
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)


class FakeServer:
    """Queue plus recorded calls. Take and stop long-poll for `hold_s`; `faults` makes the next
    requests of a kind answer with a given status (e.g. 503), carrying `Retry-After:
    fault_retry_after`, before behaving normally."""

    def __init__(self, hold_s: float = 0.05) -> None:
        self.hold_s = hold_s
        self.queue: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self.stops: set[str] = set()
        self.faults: dict[str, list[int]] = {}
        self.fault_retry_after = "0"
        self.changed = asyncio.Event()
        self.done_event = asyncio.Event()
        #: False answers job-done-batch with 404, like a server without the extension
        self.batch_supported = True
        #: while clear, job-done posts wait (to let results pile up into a batch)
        self.done_gate = asyncio.Event()
        self.done_gate.set()

    def add(self, job_id: str, input_: Any = None) -> None:
        self.queue.append({"id": job_id, "input": input_ if input_ is not None else {}})
        self.changed.set()

    def stop(self, job_id: str) -> None:
        self.stops.add(job_id)
        self.changed.set()

    def of(self, kind: str, job_id: str | None = None) -> list[Call]:
        return [c for c in self.calls if c.kind == kind and (job_id is None or c.job_id == job_id)]

    def finals(self, job_id: str) -> list[Call]:
        """job-done posts that are results, not progress updates."""
        return [c for c in self.of("done", job_id) if c.body.get("status") != "IN_PROGRESS"]

    async def wait_for(self, cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
        async def check() -> bool:
            return cond()

        await harness.wait_for_async(check, timeout_s, "the condition", 0.01)

    async def _hold(self, ready: Callable[[], bool]) -> bool:
        deadline = asyncio.get_running_loop().time() + self.hold_s
        while not ready():
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                return ready()
        return True

    async def handle(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.split("/")  # "", v2, ep, route, wid[, job]
        route = parts[3]
        kind = {
            "job-take": "take",
            "job-take-batch": "take",
            "job-done": "done",
            "job-done-batch": "done-batch",
            "job-stream": "stream",
            "job-stop": "stop",
            "ping": "ping",
        }.get(route)
        if kind is None:
            return httpx.Response(404, json={"error": "not found"})
        job_id = parts[5] if len(parts) > 5 else None
        body = json.loads(request.content) if request.content else None
        params = dict(request.url.params)
        self.calls.append(Call(kind, job_id, params, body, dict(request.headers)))
        if kind == "done-batch" and not self.batch_supported:
            return httpx.Response(404, json={"error": "not found"})
        if kind == "done-batch":
            # Each result is recorded as the job-done post it stands for.
            for item in body:
                self.calls.append(Call("done", item["id"], params, item["result"]))
            self.done_event.set()
            return httpx.Response(200, json={"finished": [item["id"] for item in body]})
        if kind == "done":
            await self.done_gate.wait()
        pending = self.faults.get(kind)
        if pending:
            status = pending.pop(0)
            headers = {"Retry-After": self.fault_retry_after}
            return httpx.Response(status, headers=headers, json={"error": "fault"})
        if kind == "take":
            n = int(params.get("batch_size", "1"))
            if not await self._hold(lambda: bool(self.queue)):
                return httpx.Response(204)
            jobs, self.queue = self.queue[:n], self.queue[n:]
            return httpx.Response(200, json=jobs if route == "job-take-batch" else jobs[0])
        if kind == "stop":
            if not await self._hold(lambda: bool(self.stops)):
                return httpx.Response(204)
            ids, self.stops = sorted(self.stops), set()
            return httpx.Response(200, json={"jobsToStop": ids})
        if kind == "done":
            self.done_event.set()
        return httpx.Response(200, json={})


def make_handler(func: Callable[..., Any], aggregate: bool = False) -> Handler:
    return Handler(func=func, kind=classify(func), aggregate=aggregate, ref=func.__name__)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    yield FakeServer()


@pytest.fixture
def make_worker(fake: FakeServer) -> Callable[..., Worker]:
    """Factory: a Worker wired to the fake server; burst by default, fast polls and backoff."""

    def make(func: Callable[..., Any], aggregate: bool = False, **options: Any) -> Worker:
        client = httpx.AsyncClient(transport=httpx.MockTransport(fake.handle))
        transport = Transport(
            "http://fake", "ep", "wkey", "w1", client=client, backoff=Backoff(0.01, 0.05)
        )
        options.setdefault("burst", True)
        options.setdefault("min_poll_interval_s", 0.02)
        options.setdefault("ping_interval_s", 0.05)
        return Worker(make_handler(func, aggregate), transport, **options)

    return make


# End-to-end fixtures: the real server (`python -m neuroq serve`) and `neuroq worker` processes.
class E2E:
    """One server plus the worker processes a test starts; a client for the job API."""

    def __init__(self, server: Any, log_dir: Path) -> None:
        self.server = server
        self.log_dir = log_dir
        self.workers: list[Any] = []
        self.http = httpx.Client(
            base_url=server.base_url, headers=server.client_headers, timeout=30
        )

    def worker(self, handler: str, endpoint: str, *args: str, **env: str) -> Any:
        """Start `neuroq worker` with fast heartbeats; stopped (SIGTERM) at teardown."""
        proc = harness.start_worker(
            self.server, handler, endpoint, self.log_dir, "--ping-interval", "0.5", *args, **env
        )
        self.workers.append(proc)
        return proc

    def run(self, endpoint: str, input_: Any) -> str:
        return harness.submit(self.http, endpoint, input_)

    def runsync(self, endpoint: str, input_: Any) -> dict[str, Any]:
        reply = self.http.post(f"/{endpoint}/runsync", json={"input": input_})
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return harness.status(self.http, endpoint, job_id)

    def wait_status(
        self,
        endpoint: str,
        job_id: str,
        cond: Callable[[dict[str, Any]], bool],
        timeout_s: float = 15.0,
    ) -> dict[str, Any]:
        """Poll /status until cond holds; fails with the last status seen and the workers' logs."""
        try:
            return harness.wait_for(
                lambda: self.status(endpoint, job_id),
                timeout_s,
                f"the status of job {job_id} to match",
                0.05,
                until=cond,
            )
        except AssertionError as exc:
            logs = "\n".join(w.log()[-2000:] for w in self.workers)
            raise AssertionError(f"{exc}\n{logs}") from None

    def wait_done(self, endpoint: str, job_id: str, timeout_s: float = 15.0) -> dict[str, Any]:
        return self.wait_status(
            endpoint, job_id, lambda s: s["status"] not in ("IN_QUEUE", "IN_PROGRESS"), timeout_s
        )

    def close(self) -> None:
        for proc in self.workers:
            proc.stop()
        self.http.close()


@pytest.fixture(scope="module")
def e2e_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A server shared by a module; short hold times and a 2 s worker-lost limit keep it fast."""
    pytest.importorskip("neuroq.api.commands", reason="the server is not built yet")
    proc = harness.start_server(
        tmp_path_factory.mktemp("worker-e2e"),
        NEUROQ_WORKER_LOST_S="2",
        NEUROQ_JOB_TAKE_HOLD_S="1",
        NEUROQ_JOB_STOP_HOLD_S="1",
    )
    yield proc
    proc.stop()


@pytest.fixture
def e2e(e2e_server: Any, tmp_path: Path) -> Iterator[E2E]:
    env = E2E(e2e_server, tmp_path / "workers")
    yield env
    env.close()


@pytest.fixture
def endpoint() -> str:
    return "ep-" + uuid.uuid4().hex[:10]
