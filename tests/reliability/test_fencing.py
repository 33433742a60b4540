"""Leases and fencing against a real server, driven by raw-HTTP workers so that every interleaving
is exact: a lease is renewed only by evidence that the worker holds that job, and only the worker
holding the current attempt of a job can change it (result, progress, stream chunk). A take
that names no worker (a literal `$RUNPOD_POD_ID`) is refused, since it could not be fenced; with
NEUROQ_ANONYMOUS_WORKERS it is accepted under a host alias, fenced per host only.

The server runs with one-second leases, so a silent worker's job comes back within a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from harness import SDK_POST_HEADERS, ServerProcess, start_server

LEASE_S = 1.0


def _serve(factory: pytest.TempPathFactory, **extra: str) -> Iterator[ServerProcess]:
    """A server with one-second leases and holds, plus `extra` settings."""
    proc = start_server(
        factory.mktemp("fencing"),
        NEUROQ_WORKER_LOST_S=str(LEASE_S),
        NEUROQ_JOB_TAKE_HOLD_S="1",
        NEUROQ_JOB_STOP_HOLD_S="1",
        NEUROQ_MAX_RETRIES="3",
        **extra,
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _serve(tmp_path_factory)


class Raw:
    """A client and any number of workers (by id), speaking raw HTTP to one server."""

    def __init__(self, server: ServerProcess, ep: str) -> None:
        self.ep = ep
        self.client = httpx.AsyncClient(
            base_url=f"{server.base_url}/{ep}", headers=server.client_headers, timeout=30
        )
        self.worker = httpx.AsyncClient(
            base_url=f"{server.base_url}/{ep}", headers=server.worker_headers, timeout=30
        )

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.worker.aclose()

    async def submit(self) -> str:
        reply = await self.client.post("/run", json={"input": {"n": 1}})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["id"])

    async def status(self, job_id: str) -> dict[str, Any]:
        reply = await self.client.get(f"/status/{job_id}")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    async def take(self, worker: str, *, in_progress: int = 0, until_s: float = 10.0) -> str:
        """Long-poll job-take until a job comes (a lapsed lease needs a sweep or two)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + until_s
        while loop.time() < deadline:
            reply = await self.worker.get(f"/job-take/{worker}?job_in_progress={in_progress}")
            if reply.status_code == 200:
                return str(reply.json()["id"])
            assert reply.status_code == 204, reply.text
        raise AssertionError(f"worker {worker} got no job within {until_s} s")

    async def done(self, worker: str, job_id: str, body: str) -> dict[str, Any]:
        reply = await self.worker.post(
            f"/job-done/{worker}/{job_id}?isStream=false", content=body, headers=SDK_POST_HEADERS
        )
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    async def chunk(self, worker: str, job_id: str, body: str) -> dict[str, Any]:
        reply = await self.worker.post(
            f"/job-stream/{worker}/{job_id}?isStream=false", content=body, headers=SDK_POST_HEADERS
        )
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    async def ping(self, worker: str, *job_ids: str) -> None:
        params = {"job_id": ",".join(job_ids)} if job_ids else {}
        reply = await self.worker.get(f"/ping/{worker}", params=params)
        assert reply.status_code == 200, reply.text

    async def stream(self, job_id: str) -> list[Any]:
        reply = await self.client.get(f"/stream/{job_id}")
        assert reply.status_code == 200, reply.text
        return [item["output"] for item in reply.json()["stream"]]


@pytest.fixture
async def raw(srv: ServerProcess, ep: str) -> AsyncIterator[Raw]:
    api = Raw(srv, ep)
    yield api
    await api.aclose()


async def keep_alive(raw: Raw, worker: str, *held: str) -> None:
    """What an idle worker does all day: a job-stop poll open, a ping now and then."""
    while True:
        await raw.ping(worker, *held)
        reply = await raw.worker.get(f"/job-stop/{worker}")
        assert reply.status_code in (200, 204), reply.text


async def lapse_to(raw: Raw, job_id: str, new_worker: str, *, old_worker: str) -> None:
    """Let `old_worker`'s lease on the job lapse (it keeps polling but never names the job), and
    have `new_worker` take the job's next attempt."""
    alive = asyncio.create_task(keep_alive(raw, old_worker))
    try:
        assert await raw.take(new_worker) == job_id
    finally:
        alive.cancel()
        await asyncio.gather(alive, return_exceptions=True)


# -- leases ------------------------------------------------------------------------------------


async def test_a_delivery_the_worker_never_got_is_requeued_while_it_lives(raw: Raw) -> None:
    """The take reply is lost: the worker goes on polling job-stop and pinging with no jobs. Its
    poll is no evidence that it holds the job, so the lease lapses and another worker gets it."""
    job_id = await raw.submit()
    assert await raw.take("lossy") == job_id  # ... and the reply never reached the worker
    await lapse_to(raw, job_id, "rescuer", old_worker="lossy")
    status = await raw.status(job_id)
    assert status["status"] == "IN_PROGRESS" and status["workerId"] == "rescuer"
    assert status["retries"] == 1


async def test_a_take_saying_in_progress_renews_nothing(raw: Raw) -> None:
    """job_in_progress=1 says the worker holds some job, not which: it must not keep alive a
    job whose delivery was lost."""
    job_id = await raw.submit()
    assert await raw.take("busy") == job_id

    async def busy_takes() -> None:
        while True:
            reply = await raw.worker.get("/job-take/busy?job_in_progress=1")
            assert reply.status_code == 204, reply.text

    polling = asyncio.create_task(busy_takes())
    try:
        assert await raw.take("rescuer") == job_id
    finally:
        polling.cancel()
        await asyncio.gather(polling, return_exceptions=True)


async def test_a_worker_that_lists_its_job_keeps_it_for_many_leases(raw: Raw) -> None:
    job_id = await raw.submit()
    assert await raw.take("steady") == job_id
    for _ in range(6):  # three leases' worth of pings, each naming the job
        await raw.ping("steady", job_id)
        await asyncio.sleep(LEASE_S / 2)
    status = await raw.status(job_id)
    assert status["status"] == "IN_PROGRESS" and status["workerId"] == "steady"
    assert "retries" not in status


async def test_stream_chunks_renew_the_lease_of_their_job(raw: Raw) -> None:
    job_id = await raw.submit()
    assert await raw.take("streamer") == job_id
    for n in range(6):
        await raw.chunk("streamer", job_id, f'{{"output": {n}}}')
        await asyncio.sleep(LEASE_S / 2)
    assert (await raw.status(job_id)).get("retries") is None
    await raw.done("streamer", job_id, '{"output": "end"}')
    assert await raw.stream(job_id) == [0, 1, 2, 3, 4, 5]


# -- fencing -----------------------------------------------------------------------------------


async def test_a_zombie_result_is_ignored_and_the_holder_result_wins(raw: Raw) -> None:
    job_id = await raw.submit()
    assert await raw.take("zombie") == job_id
    await lapse_to(raw, job_id, "holder", old_worker="zombie")
    reply = await raw.done("zombie", job_id, '{"output": "stale"}')
    assert "ignored" in reply, reply
    status = await raw.status(job_id)
    assert status["status"] == "IN_PROGRESS" and status["workerId"] == "holder"
    assert await raw.done("holder", job_id, '{"output": "fresh"}') == {}
    status = await raw.status(job_id)
    assert status["status"] == "COMPLETED" and status["output"] == "fresh"


async def test_zombie_chunks_and_progress_stay_out_of_the_new_attempt(raw: Raw) -> None:
    job_id = await raw.submit()
    assert await raw.take("zombie") == job_id
    await lapse_to(raw, job_id, "holder", old_worker="zombie")
    assert "ignored" in await raw.chunk("zombie", job_id, '{"output": "stale chunk"}')
    progress = '{"status": "IN_PROGRESS", "output": "stale progress"}'
    assert "ignored" in await raw.done("zombie", job_id, progress)
    assert "output" not in await raw.status(job_id)
    await raw.chunk("holder", job_id, '{"output": "fresh chunk"}')
    await raw.done("holder", job_id, '{"status": "IN_PROGRESS", "output": "fresh progress"}')
    assert (await raw.status(job_id))["output"] == "fresh progress"
    assert await raw.stream(job_id) == ["fresh chunk"]


async def test_a_worker_that_never_held_the_job_changes_nothing(raw: Raw) -> None:
    job_id = await raw.submit()
    assert await raw.take("holder") == job_id
    assert "ignored" in await raw.done("stranger", job_id, '{"error": "not mine"}')
    assert "ignored" in await raw.chunk("stranger", job_id, '{"output": "not mine"}')
    reply = await raw.worker.post(
        "/job-done-batch/stranger", json=[{"id": job_id, "result": {"output": "not mine"}}]
    )
    assert reply.status_code == 200 and reply.json()["ignored"] == [job_id], reply.text
    # a stranger's body that cannot be stored does not fail someone else's job either
    reply = await raw.worker.post(f"/job-done/stranger/{job_id}", content=b"not json")
    assert reply.status_code == 400
    assert (await raw.status(job_id))["status"] == "IN_PROGRESS"
    assert await raw.done("holder", job_id, '{"output": "mine"}') == {}
    status = await raw.status(job_id)
    assert status["status"] == "COMPLETED" and status["output"] == "mine"
    assert await raw.stream(job_id) == []


async def test_an_earlier_attempt_of_the_same_worker_id_is_fenced_by_its_attempt(
    raw: Raw,
) -> None:
    """The same worker id takes the job again after its lease lapsed: the job object names the
    attempt, and a post naming the earlier one (our worker echoes it) changes nothing."""
    job_id = await raw.submit()
    first = await raw.worker.get("/job-take/same?job_in_progress=0")
    assert first.json()["attempt"] == 0
    await lapse_to(raw, job_id, "same", old_worker="other")
    second = await raw.status(job_id)
    assert second["workerId"] == "same" and second["retries"] == 1
    stale = await raw.worker.post(
        f"/job-done/same/{job_id}?attempt=0", content=b'{"output": "stale"}'
    )
    assert "ignored" in stale.json(), stale.text
    chunk = await raw.worker.post(
        f"/job-stream/same/{job_id}?attempt=0", content=b'{"output": "stale"}'
    )
    assert "ignored" in chunk.json(), chunk.text
    batch = [{"id": job_id, "attempt": 0, "result": {"output": "stale"}}]
    reply = await raw.worker.post("/job-done-batch/same", json=batch)
    assert reply.json()["ignored"] == [job_id], reply.text
    fresh = await raw.worker.post(
        f"/job-done/same/{job_id}?attempt=1", content=b'{"output": "fresh"}'
    )
    assert fresh.json() == {}
    assert (await raw.status(job_id))["output"] == "fresh"


# -- anonymous takes ------------------------------------------------------------------------------

#: what the SDK sends as the worker id when its job-take template says `$RUNPOD_POD_ID`
ANON = "$RUNPOD_POD_ID"


async def test_a_take_that_names_no_worker_is_refused_so_no_zombie_can_share_its_id(
    raw: Raw,
) -> None:
    """Two workers on one host whose job-take template keeps the literal `$RUNPOD_POD_ID` would
    both hold jobs as `anon-127-0-0-1`, and a zombie's late result would win over the holder's
    (the opt-in case below). By default such a take is refused, and so is every post or ping
    under that id; the job stays queued for a worker that names itself."""
    job_id = await raw.submit()
    for route in ("job-take", "job-stop"):
        reply = await raw.worker.get(f"/{route}/{ANON}?job_in_progress=0")
        assert reply.status_code == 400, reply.text
        assert "`$ID`" in reply.json()["error"]
    assert (await raw.status(job_id))["status"] == "IN_QUEUE"
    assert await raw.take("pod-b") == job_id
    reply = await raw.worker.post(f"/job-done/{ANON}/{job_id}", content=b'{"output": "stale"}')
    assert reply.status_code == 400, reply.text
    assert await raw.done("pod-b", job_id, '{"output": "fresh"}') == {}
    assert (await raw.status(job_id))["output"] == "fresh"


@pytest.fixture(scope="module")
def anon_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that accepts `$RUNPOD_POD_ID` takes (NEUROQ_ANONYMOUS_WORKERS)."""
    yield from _serve(tmp_path_factory, NEUROQ_ANONYMOUS_WORKERS="true")


@pytest.fixture
async def anon_raw(anon_srv: ServerProcess, ep: str) -> AsyncIterator[Raw]:
    api = Raw(anon_srv, ep)
    yield api
    await api.aclose()


async def test_with_anonymous_workers_a_same_host_zombie_is_not_fenced(anon_raw: Raw) -> None:
    """The documented limit of NEUROQ_ANONYMOUS_WORKERS: pod-a and pod-b share a host, so both
    take as `anon-127-0-0-1`. pod-a's lease lapses, pod-b takes the next attempt, and pod-a's
    late result still passes the fence (its host alias holds the job) and beats pod-b's."""
    raw = anon_raw
    job_id = await raw.submit()
    assert await raw.take(ANON) == job_id  # pod-a
    await lapse_to(raw, job_id, ANON, old_worker="pod-a")  # pod-b, same host
    status = await raw.status(job_id)
    assert status["workerId"] == "anon-127-0-0-1" and status["retries"] == 1
    assert await raw.done("pod-a", job_id, '{"output": "stale"}') == {}
    assert "ignored" in await raw.done("pod-b", job_id, '{"output": "fresh"}')
    assert (await raw.status(job_id))["output"] == "stale"


async def test_with_anonymous_workers_another_host_is_fenced_out(
    anon_raw: Raw, anon_srv: ServerProcess
) -> None:
    """The alias is per host: a worker on another address (127.0.0.2, also loopback) neither
    changes a job held by `anon-127-0-0-1` nor shares its alias."""
    raw = anon_raw
    elsewhere = httpx.AsyncClient(
        base_url=f"{anon_srv.base_url}/{raw.ep}",
        headers=anon_srv.worker_headers,
        timeout=30,
        transport=httpx.AsyncHTTPTransport(local_address="127.0.0.2"),
    )
    try:
        first, second = await raw.submit(), await raw.submit()
        assert await raw.take(ANON) == first
        reply = await elsewhere.post(f"/job-done/pod-x/{first}", content=b'{"output": "x"}')
        assert "ignored" in reply.json(), reply.text
        reply = await elsewhere.get(f"/job-take/{ANON}?job_in_progress=0")
        assert reply.json()["id"] == second
        assert (await raw.status(second))["workerId"] == "anon-127-0-0-2"
        assert "ignored" in await raw.done("pod-a", second, '{"output": "not mine"}')
        assert await raw.done("pod-a", first, '{"output": "mine"}') == {}
        assert (await raw.status(first))["output"] == "mine"
    finally:
        await elsewhere.aclose()
