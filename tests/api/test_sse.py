"""Both server-sent-event routes held to the same expectations: the client's
`GET /v2/{ep}/stream/{id}` with `Accept: text/event-stream` (API key) and the dashboard's
`/ui/stream/{ep}/{id}` (session cookie). They share neuroq.api.sse, and used to drift: a bad
`Last-Event-ID` was 400 on the first and silently read as 0 on the second. Below them, the shared
parts without a server: event format, header parsing, and the loop against a scripted store
(keepalives, a job deleted mid-stream)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from harness import RawWorker, ServerProcess, read_events, start_server, submit
from starlette.exceptions import HTTPException
from starlette.requests import Request

from neuroq.api import sse
from neuroq.jobs import Job, JobStatus, Policy
from neuroq.store.base import Notifier

ROUTES = ["client", "dashboard"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("sse"))
    yield proc
    proc.stop()


@dataclass
class EventRoute:
    """One of the two SSE routes, with an HTTP client authenticated the way it wants."""

    http: httpx.Client
    #: the path, with `{ep}` and `{job_id}` to fill in
    path: str

    def url(self, ep: str, job_id: str) -> str:
        return self.path.format(ep=ep, job_id=job_id)


@pytest.fixture(params=ROUTES)
def route(request: pytest.FixtureRequest, srv: ServerProcess) -> Iterator[EventRoute]:
    headers = {"Accept": "text/event-stream"}
    with httpx.Client(base_url=srv.url, headers=headers, timeout=30) as http:
        if request.param == "client":
            http.headers.update(srv.client_headers)
            yield EventRoute(http, "/v2/{ep}/stream/{job_id}")
        else:
            reply = http.post("/login", data={"key": srv.api_key, "next": "/"})
            assert reply.status_code == 303, reply.text
            yield EventRoute(http, "/ui/stream/{ep}/{job_id}")


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> Iterator[httpx.Client]:
    """The job API (base URL `.../v2`, client key), for submitting jobs."""
    with srv.client(timeout_s=30) as http:
        yield http


@pytest.fixture
def worker(srv: ServerProcess, ep: str) -> Iterator[RawWorker]:
    w = RawWorker(srv, ep, "w-sse")
    yield w
    w.close()


def test_chunks_are_pushed_then_one_status_event(
    route: EventRoute, client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    job_id = submit(client, ep, {})
    worker.take()
    worker.post("job-stream", job_id, {"output": "one"})
    seen: list[dict[str, str]] = []
    with route.http.stream("GET", route.url(ep, job_id)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        for event in read_events(response):
            seen.append(event)
            if len(seen) == 1:
                # Pushed as it arrives: the second chunk is posted only after the first event.
                worker.post("job-stream", job_id, {"output": "two\nlines"})
            elif len(seen) == 2:
                worker.post("job-done", job_id, {"output": "done"})
    assert [e.get("id") for e in seen] == ["1", "2", None]
    assert json.loads(seen[0]["data"]) == {"output": "one"}
    assert json.loads(seen[1]["data"]) == {"output": "two\nlines"}
    assert seen[2]["event"] == "status"
    final = json.loads(seen[2]["data"])
    assert final["id"] == job_id and final["status"] == "COMPLETED" and final["output"] == "done"


def test_last_event_id_resumes_after_that_chunk(
    route: EventRoute, client: httpx.Client, ep: str, worker: RawWorker
) -> None:
    job_id = submit(client, ep, {})
    worker.take()
    for n in range(3):
        worker.post("job-stream", job_id, {"output": n})
    worker.post("job-done", job_id, {"output": "done"})
    for last, ids in [("2", ["3", None]), ("3", [None]), ("", ["1", "2", "3", None])]:
        headers = {"Last-Event-ID": last}
        with route.http.stream("GET", route.url(ep, job_id), headers=headers) as response:
            assert [e.get("id") for e in read_events(response)] == ids, last
    # Neither form moved the consuming cursor of the JSON /stream read.
    consumed = client.get(f"/{ep}/stream/{job_id}")
    assert len(consumed.json()["stream"]) == 3


@pytest.mark.parametrize("last", ["abc", "-1", "1.5", "0x10", "9" * 19])
def test_bad_last_event_id_is_400_naming_the_header(
    route: EventRoute, client: httpx.Client, ep: str, last: str
) -> None:
    job_id = submit(client, ep, {})
    headers = {"Last-Event-ID": last}
    # Streamed, so that a route that wrongly starts the (endless) event stream fails at once.
    with route.http.stream("GET", route.url(ep, job_id), headers=headers) as reply:
        assert reply.status_code == 400
        reply.read()
    assert reply.headers["content-type"].startswith("application/json")
    assert "Last-Event-ID" in reply.json()["error"]


@pytest.mark.parametrize("job_id", ["no-such-job", "bad.id"])
def test_unknown_job_is_404_json(route: EventRoute, ep: str, job_id: str) -> None:
    reply = route.http.get(route.url(ep, job_id))
    assert reply.status_code == 404, reply.text
    assert "not found" in reply.json()["error"]


def test_format_event_splits_lines_into_data_fields() -> None:
    assert sse.format_event('{"a": 1}', event_id=7) == b'id: 7\ndata: {"a": 1}\n\n'
    assert sse.format_event("x\ny", event="status") == b"event: status\ndata: x\ndata: y\n\n"
    assert sse.format_event("") == b"data: \n\n"


@pytest.mark.parametrize(
    ("raw", "expected"), [(b"", 0), (b"  ", 0), (b"0", 0), (b" 42 ", 42), (b"9" * 18, 10**18 - 1)]
)
def test_last_event_id_reads_a_decimal_seq(raw: bytes, expected: int) -> None:
    request = Request({"type": "http", "headers": [(b"last-event-id", raw)]})
    assert sse.last_event_id(request) == expected


def test_last_event_id_refuses_a_non_ascii_digit() -> None:
    # "\xb2" is "²" once decoded as latin-1: str.isdigit() says yes, int() says no.
    request = Request({"type": "http", "headers": [(b"last-event-id", b"\xb2")]})
    with pytest.raises(HTTPException) as raised:
        sse.last_event_id(request)
    assert raised.value.status_code == 400 and "Last-Event-ID" in raised.value.detail


#: one scripted `read_stream` answer: the job's status and its chunks, or None for a deleted job
Reply = tuple[JobStatus, list[tuple[int, str]]] | None


class ScriptedStore:
    """Just what the event loop reads: `read_stream` answers from a script, one reply a call."""

    recheck_s = 0.01

    def __init__(self, *replies: Reply) -> None:
        self.notifier = Notifier()
        self.replies = list(replies)
        self.after: list[int | None] = []

    async def read_stream(
        self, endpoint_id: str, job_id: str, after_seq: int | None = None
    ) -> tuple[Job, list[tuple[int, str]]] | None:
        self.after.append(after_seq)
        reply = self.replies.pop(0)
        if reply is None:
            return None
        status, chunks = reply
        return Job("j", "ep", status, "{}", Policy(), 0), chunks


async def events_of(store: ScriptedStore, last_event_id: str = "") -> list[bytes]:
    headers = [(b"last-event-id", last_event_id.encode())]
    request = Request({"type": "http", "headers": headers})
    response = await sse.job_events(request, store, "ep", "j")  # type: ignore[arg-type]
    assert response is not None
    return [bytes(part) async for part in response.body_iterator]  # type: ignore[arg-type]


async def test_loop_sends_keepalives_until_the_job_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.02)
    running, done = JobStatus.IN_PROGRESS, JobStatus.COMPLETED
    quiet: list[Reply] = [(running, [])] * 3  # about one keepalive's worth of rechecks
    store = ScriptedStore((running, [(4, '"a"')]), *quiet, (done, [(5, '"b"')]))
    sent = await events_of(store, "3")
    assert sent[0] == b'id: 4\ndata: "a"\n\n'
    assert b": keepalive\n\n" in sent
    assert sent[-2:] == [b'id: 5\ndata: "b"\n\n', sent[-1]]
    assert sent[-1].startswith(b"event: status\n")
    # Each read asks only for what came after the last chunk sent, never the consuming read.
    assert store.after[0] == 3 and store.after[-1] == 4 and None not in store.after


async def test_loop_ends_with_an_error_event_when_the_job_is_deleted() -> None:
    store = ScriptedStore((JobStatus.IN_QUEUE, []), None)
    sent = await events_of(store)
    assert sent == [b'event: error\ndata: {"error": "job j no longer exists"}\n\n']


async def test_unknown_job_gives_no_stream() -> None:
    request = Request({"type": "http", "headers": []})
    assert await sse.job_events(request, ScriptedStore(None), "ep", "j") is None  # type: ignore[arg-type]
