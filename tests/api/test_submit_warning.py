"""The submit warning (neuroq.api.served): a job sent to an endpoint no worker has ever served
gets `X-NeuroQ-Warning` on its /run or /runsync reply; a served or configured endpoint does not.
The per-endpoint cache keeps the check off the hot path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import WORKER_KEY, in_process_app, new_endpoint, start_server
from starlette.testclient import TestClient

from neuroq.api import served
from neuroq.endpoints import EndpointConfig


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setattr(served, "CACHE_S", 0.0)  # every submit looks afresh
    with in_process_app(tmp_path, scaler=False) as client:
        yield client


def test_unserved_endpoint_warns_on_run_and_runsync(app: TestClient) -> None:
    ep = new_endpoint("typo")
    reply = app.post(f"/{ep}/run", json={"input": 1})
    assert reply.status_code == 200
    warning = reply.headers[served.HEADER]
    assert ep in warning and "no worker" in warning
    reply = app.post(f"/{ep}/runsync?wait=1000", json={"input": 1})
    assert reply.status_code == 200 and reply.json()["status"] == "IN_QUEUE"
    assert ep in reply.headers[served.HEADER]


def test_no_warning_once_a_worker_has_taken_a_job(app: TestClient) -> None:
    ep = new_endpoint("served")
    job_id = app.post(f"/{ep}/run", json={"input": 1}).json()["id"]
    taken = app.get(f"/{ep}/job-take/w-1", headers={"Authorization": WORKER_KEY}).json()
    assert taken["id"] == job_id
    reply = app.post(f"/{ep}/run", json={"input": 2})
    assert served.HEADER not in reply.headers


def test_no_warning_for_an_endpoint_whose_workers_the_scaler_starts(app: TestClient) -> None:
    ep = new_endpoint("configured")
    put = app.put(
        f"http://testserver/endpoints/{ep}", json={"handler": "neuroq.demo_handlers:echo"}
    )
    assert put.status_code in (200, 201), put.text
    reply = app.post(f"/{ep}/run", json={"input": 1})
    assert served.HEADER not in reply.headers


class CountingStore:
    """Answers `health` and `get_endpoint` for an endpoint nobody serves, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
        self.calls += 1
        jobs = {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 1, "retried": 0}
        return {"jobs": jobs, "workers": {"idle": 0, "running": 0}}

    async def get_endpoint(self, endpoint_id: str) -> EndpointConfig | None:
        return None


async def test_the_answer_is_cached_per_endpoint_for_a_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr(served.time, "monotonic", lambda: clock[0])
    store: Any = CountingStore()
    cache = served.ServedCache()
    assert await cache.served(store, "a") is False
    assert await cache.served(store, "a") is False
    assert store.calls == 1
    await cache.served(store, "b")
    assert store.calls == 2
    clock[0] += served.CACHE_S + 0.01
    await cache.served(store, "a")
    assert store.calls == 3


async def test_concurrent_submits_share_one_look(monkeypatch: pytest.MonkeyPatch) -> None:
    """When an answer expires under load, the submits arriving together wait for one store
    look instead of each sending its own (64 health queries at concurrency 64)."""
    release = asyncio.Event()

    class SlowStore(CountingStore):
        async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
            await release.wait()
            return await super().health(endpoint_id, now_ms)

    store: Any = SlowStore()
    cache = served.ServedCache()
    looks = [asyncio.ensure_future(cache.served(store, "a")) for _ in range(64)]
    await asyncio.sleep(0)  # every submit is now waiting for an answer
    release.set()
    assert await asyncio.gather(*looks) == [False] * 64
    assert store.calls == 1


async def test_a_served_answer_is_kept_longer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Served stays true for as long as the endpoint's workers or its taken jobs last, so that
    answer is reused for SERVED_CACHE_S; an unserved one only for CACHE_S, so a worker that
    starts silences the warning quickly."""
    clock = [100.0]
    monkeypatch.setattr(served.time, "monotonic", lambda: clock[0])

    class ServedStore(CountingStore):
        async def health(self, endpoint_id: str, now_ms: int) -> dict[str, dict[str, int]]:
            reply = await super().health(endpoint_id, now_ms)
            reply["workers"]["idle"] = 1
            return reply

    store: Any = ServedStore()
    cache = served.ServedCache()
    assert await cache.served(store, "a") is True
    clock[0] += served.CACHE_S + 0.01
    assert await cache.served(store, "a") is True
    assert store.calls == 1
    clock[0] += served.SERVED_CACHE_S
    await cache.served(store, "a")
    assert store.calls == 2


def test_serve_with_worker_never_warns_about_its_own_endpoint(tmp_path: Path) -> None:
    """`neuroq serve --worker` starts its workers after the server answers; a submit made while
    they import and warm up must not be told that nobody serves the endpoint."""
    server = start_server(
        tmp_path / "srv", "--worker", "neuroq.demo_handlers:echo", "--endpoint", "local"
    )
    try:
        reply = httpx.post(
            f"{server.base_url}/local/run", json={"input": 1}, headers=server.client_headers
        )
        assert reply.status_code == 200
        assert served.HEADER not in reply.headers, reply.headers[served.HEADER]
        other = httpx.post(
            f"{server.base_url}/elsewhere/run", json={"input": 1}, headers=server.client_headers
        )
        assert served.HEADER in other.headers  # only its own endpoint is exempt
    finally:
        server.stop()
