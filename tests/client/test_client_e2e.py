"""The client against a real server and real `neuroq worker` processes on loopback.

Every scenario runs twice, through the blocking client and through the asyncio client (the
`client` fixture), so the two cannot drift apart. Workers run `neuroq.demo_handlers` on their own
endpoints; endpoints named `idle-*` have no worker, so their jobs stay queued.

The server's store is SQLite, then a PostgreSQL schema of its own (the `backend` parameter;
skipped without NEUROQ_TEST_POSTGRES_URL). On PostgreSQL only the asyncio client runs: the
blocking one speaks the same protocol, so it would double the time, not the coverage of the
store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from harness import STORE_BACKENDS, ServerProcess, WorkerProcess, start_worker, wait_for_async

from neuroq import AsyncEndpoint, Endpoint, async_send_and_wait, send_and_wait
from neuroq.errors import AuthenticationError, JobFailed, JobTimeout, NotFoundError

pytestmark = pytest.mark.timeout(120)

HANDLERS = {
    "echo": "neuroq.demo_handlers:echo",
    "fail": "neuroq.demo_handlers:fail",
    "sleep": "neuroq.demo_handlers:sleep",
    "stream": "neuroq.demo_handlers:stream",
}


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def workers(
    shared_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, WorkerProcess]]:
    log_dir = tmp_path_factory.mktemp("workers")
    procs = {
        name: start_worker(shared_server, handler, name, log_dir, "--concurrency", "2")
        for name, handler in HANDLERS.items()
    }
    yield procs
    for proc in procs.values():
        proc.stop()


class Client:
    """One scenario API over either client: every method is awaited; the blocking client's
    calls run in a thread so the event loop stays free."""

    def __init__(self, kind: str, server: ServerProcess) -> None:
        self.kind = kind
        self.server = server
        self.endpoints: list[Endpoint | AsyncEndpoint] = []

    def endpoint(self, endpoint_id: str, **kw: Any) -> Endpoint | AsyncEndpoint:
        kw.setdefault("api_key", self.server.api_key)
        cls = Endpoint if self.kind == "sync" else AsyncEndpoint
        ep = cls(endpoint_id, base_url=self.server.base_url, **kw)
        self.endpoints.append(ep)
        return ep

    async def call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        if self.kind == "sync":
            return await asyncio.to_thread(fn, *args, **kw)
        return await fn(*args, **kw)

    async def collect(self, job: Any, **kw: Any) -> list[Any]:
        if self.kind == "sync":
            return await asyncio.to_thread(lambda: list(job.stream(**kw)))
        return [chunk async for chunk in job.stream(**kw)]

    async def send_and_wait(self, input_data: Any, timeout: float, endpoint_id: str) -> Any:
        kw = {"endpoint_id": endpoint_id, "api_key": self.server.api_key}
        kw["base_url"] = self.server.base_url
        if self.kind == "sync":
            return await asyncio.to_thread(send_and_wait, input_data, timeout, **kw)
        return await async_send_and_wait(input_data, timeout, **kw)

    async def wait_for_state(self, job: Any, state: str, timeout_s: float = 20.0) -> None:
        await wait_for_async(
            lambda: self.call(job.status),
            timeout_s,
            f"the job to be {state}",
            0.05,
            until=lambda current: current == state,
        )

    async def close(self) -> None:
        for ep in self.endpoints:
            if isinstance(ep, Endpoint):
                ep.close()
            else:
                await ep.aclose()


@pytest.fixture(params=["sync", "async"])
async def client(
    request: pytest.FixtureRequest,
    backend: str,
    shared_server: ServerProcess,
    workers: dict[str, WorkerProcess],
) -> AsyncIterator[Client]:
    if request.param == "sync" and backend == "postgres":
        pytest.skip("on PostgreSQL the asyncio client covers the store (see the module docstring)")
    c = Client(request.param, shared_server)
    yield c
    await c.close()


async def test_send_and_wait_returns_output(client: Client) -> None:
    data = {"action": "generate", "prompt": "ChatGPTについて教えて", "max_length": 80}
    assert await client.send_and_wait(data, 30, "echo") == {"output": data}


async def test_send_and_wait_returns_error_for_a_failed_job(client: Client) -> None:
    result = await client.send_and_wait({"message": "bad prompt"}, 30, "fail")
    assert set(result) == {"error"}
    assert "bad prompt" in result["error"]


async def test_send_and_wait_timeout_returns_error_near_the_deadline(client: Client) -> None:
    started = time.monotonic()
    result = await client.send_and_wait({"x": 1}, 1.5, f"idle-timeout-{client.kind}")
    elapsed = time.monotonic() - started
    assert set(result) == {"error"} and "not finished after 1.5 s" in result["error"]
    assert 1.5 <= elapsed < 3.0  # the precise bound is tested on a simulated clock


async def test_output_and_status_object(client: Client) -> None:
    ep = client.endpoint("echo")
    job = await client.call(ep.run, [1, "two"])
    assert await client.call(job.output, 30) == [1, "two"]
    status = await client.call(job.status_object)
    assert status["status"] == "COMPLETED" and status["id"] == job.id
    assert {"delayTime", "executionTime", "workerId"} <= set(status)


async def test_output_raises_job_failed(client: Client) -> None:
    job = await client.call(client.endpoint("fail").run, {"message": "nope"})
    with pytest.raises(JobFailed) as info:
        await client.call(job.output, 30)
    assert info.value.status == "FAILED" and "nope" in str(info.value.error)


async def test_output_timeout_raises_job_timeout(client: Client) -> None:
    job = await client.call(client.endpoint(f"idle-out-{client.kind}").run, 1)
    started = time.monotonic()
    with pytest.raises(JobTimeout) as info:
        await client.call(job.output, 1.0)
    assert time.monotonic() - started < 2.5
    assert info.value.last_status is not None
    assert info.value.last_status["status"] == "IN_QUEUE"


@pytest.mark.parametrize("sse", [True, False])
async def test_stream_yields_each_chunk_once_in_order(client: Client, sse: bool) -> None:
    job = await client.call(client.endpoint("stream").run, {"count": 5, "delay": 0.05})
    chunks = await client.collect(job, timeout_s=30, sse=sse)
    assert chunks == [{"i": i} for i in range(5)]
    assert await client.call(job.status) == "COMPLETED"


async def test_cancel_a_running_job(client: Client) -> None:
    job = await client.call(client.endpoint("sleep").run, {"seconds": 60})
    await client.wait_for_state(job, "IN_PROGRESS")
    reply = await client.call(job.cancel)
    assert reply["status"] == "CANCELLED"
    with pytest.raises(JobFailed) as info:
        await client.call(job.output, 10)
    assert info.value.status == "CANCELLED"


async def test_cancelled_job_gives_error_to_send_and_wait_style_callers(client: Client) -> None:
    ep = client.endpoint(f"idle-cancel-{client.kind}")
    job = await client.call(ep.run, 1)
    await client.call(job.cancel)
    status = await client.call(job.wait, 5)
    assert status["status"] == "CANCELLED"


async def test_retry_a_failed_job(client: Client) -> None:
    job = await client.call(client.endpoint("fail").run, {"message": "again"})
    first = await client.call(job.wait, 30)
    assert first["status"] == "FAILED"
    assert (await client.call(job.retry))["status"] == "IN_QUEUE"
    second = await client.call(job.wait, 30)
    assert second["status"] == "FAILED" and second["retries"] == 1


async def test_run_sync(client: Client) -> None:
    status = await client.call(client.endpoint("echo").run_sync, {"q": 1}, 30)
    assert status["status"] == "COMPLETED" and status["output"] == {"q": 1}
    assert status["id"].startswith("sync-")


async def test_run_sync_reports_failure_as_status(client: Client) -> None:
    status = await client.call(client.endpoint("fail").run_sync, {"message": "m"}, 30)
    assert status["status"] == "FAILED" and "m" in str(status["error"])


async def test_health_and_purge_queue(client: Client) -> None:
    ep = client.endpoint(f"idle-purge-{client.kind}")
    jobs = [await client.call(ep.run, i) for i in range(3)]
    health = await client.call(ep.health)
    assert health["jobs"]["inQueue"] == 3
    assert all(isinstance(v, int) for part in health.values() for v in part.values())
    assert await client.call(ep.purge_queue) == {"removed": 3, "status": "completed"}
    assert [await client.call(j.status) for j in jobs] == ["CANCELLED"] * 3


async def test_idempotency_key_returns_the_same_job(client: Client) -> None:
    ep = client.endpoint(f"idle-idem-{client.kind}")
    first = await client.call(ep.run, 1, idempotency_key=f"order-{client.kind}")
    again = await client.call(ep.run, 1, idempotency_key=f"order-{client.kind}")
    assert first.id == again.id


async def test_unknown_job_and_bad_key(client: Client) -> None:
    ep = client.endpoint("echo")
    with pytest.raises(NotFoundError):
        await client.call(ep.job("no-such-job").status)
    bad = client.endpoint("echo", api_key="wrong")
    with pytest.raises(AuthenticationError):
        await client.call(bad.health)


def test_base_url_from_environment(
    shared_server: ServerProcess, workers: dict[str, WorkerProcess], monkeypatch: Any
) -> None:
    """The guide's call, unchanged: only environment variables point it at our server."""
    monkeypatch.setenv("NEUROQ_API_URL", shared_server.url)  # bare origin: /v2 is added
    monkeypatch.setenv("RUNPOD_API_KEY", shared_server.api_key)
    monkeypatch.setenv("RUNPOD_ENDPOINT_ID", "echo")
    result = send_and_wait({"action": "generate", "prompt": "hi"}, timeout=600)
    if "output" in result:
        assert result["output"] == {"action": "generate", "prompt": "hi"}
    else:
        pytest.fail(f"error: {result['error']}")


def test_workers_are_still_alive(workers: dict[str, WorkerProcess]) -> None:
    """A crashed worker would make the scenarios above pass or fail for the wrong reason."""
    for name, proc in workers.items():
        assert proc.proc.poll() is None, f"worker {name} exited:\n{proc.log()}"
