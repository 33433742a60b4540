"""The drivers over httpx.MockTransport: transient failures are retried with the same request
(and the same Idempotency-Key), Retry-After is honoured, permanent errors are not retried, and a
server without long-poll, SSE or a terminal runsync reply (hosted RunPod) is handled."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx
import pytest

from neuroq import AsyncEndpoint, Endpoint
from neuroq.errors import APIError, AuthenticationError, NotFoundError, TransportError

BASE = "http://mock.test/v2"
Handler = Callable[[httpx.Request], httpx.Response]


def sync_endpoint(handler: Handler) -> Endpoint:
    return Endpoint("ep", api_key="k", base_url=BASE, transport=httpx.MockTransport(handler))


def async_endpoint(handler: Handler) -> AsyncEndpoint:
    return AsyncEndpoint("ep", api_key="k", base_url=BASE, transport=httpx.MockTransport(handler))


def flaky(
    failures: list[Exception | httpx.Response], final: httpx.Response
) -> tuple[Handler, list[httpx.Request]]:
    """A handler that fails with each item of `failures` in turn, then answers `final`."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= len(failures):
            item = failures[len(seen) - 1]
            if isinstance(item, Exception):
                raise item
            return fresh(item)
        return fresh(final)

    return handler, seen


def fresh(template: httpx.Response) -> httpx.Response:
    """A new response like `template`: a response object can be sent only once."""
    return httpx.Response(template.status_code, headers=template.headers, content=template.content)


QUEUED = httpx.Response(200, json={"id": "job-1", "status": "IN_QUEUE"})


def test_run_survives_two_connection_failures_with_one_idempotency_key() -> None:
    handler, seen = flaky([httpx.ConnectError("refused"), httpx.ReadError("reset")], QUEUED)
    with sync_endpoint(handler) as ep:
        job = ep.run({"x": 1})
    assert job.id == "job-1"
    assert len(seen) == 3
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1  # the server can tell the three attempts are one submission
    assert json.loads(seen[-1].content) == {"input": {"x": 1}}
    assert seen[-1].headers["Authorization"] == "Bearer k"


async def test_async_run_survives_two_failures() -> None:
    handler, seen = flaky([httpx.ConnectError("refused"), httpx.Response(503)], QUEUED)
    async with async_endpoint(handler) as ep:
        job = await ep.run({"x": 1})
    assert job.id == "job-1" and len(seen) == 3


def test_429_retry_after_is_honoured() -> None:
    busy = httpx.Response(429, headers={"Retry-After": "1"}, json={"error": "slow down"})
    handler, seen = flaky([busy], httpx.Response(200, json={"jobs": {}, "workers": {}}))
    started = time.monotonic()
    with sync_endpoint(handler) as ep:
        assert ep.health() == {"jobs": {}, "workers": {}}
    assert time.monotonic() - started >= 1.0
    assert len(seen) == 2


def test_persistent_failure_gives_up_with_transport_error() -> None:
    handler, seen = flaky([httpx.ConnectError("refused")] * 10, QUEUED)
    with sync_endpoint(handler) as ep, pytest.raises(TransportError, match="/v2/ep/run failed"):
        ep.run(1)
    assert len(seen) == 5


def test_non_idempotent_post_is_not_resent_after_a_5xx() -> None:
    handler, seen = flaky([httpx.Response(500, json={"error": "oops"})], QUEUED)
    with sync_endpoint(handler) as ep, pytest.raises(APIError, match="oops"):
        ep.job("job-1").retry()
    assert len(seen) == 1


@pytest.mark.parametrize(("code", "error"), [(401, AuthenticationError), (404, NotFoundError)])
def test_permanent_errors_raise_at_once(code: int, error: type[Exception]) -> None:
    handler, seen = flaky([httpx.Response(code, json={"error": "no"})] * 5, QUEUED)
    with sync_endpoint(handler) as ep, pytest.raises(error):
        ep.job("job-1").status()
    assert len(seen) == 1


def hosted_runpod(progress_polls: int) -> tuple[Handler, list[httpx.Request]]:
    """Behaves like api.runpod.ai: ignores ?wait=, has no SSE, runsync answers IN_PROGRESS."""
    seen: list[httpx.Request] = []
    chunks = [[{"output": "a"}, {"output": "b"}], [{"output": "c"}]]

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        path = request.url.path
        if path.endswith("/runsync"):
            return httpx.Response(200, json={"id": "job-1", "status": "IN_PROGRESS"})
        if "/stream/" in path:
            batch = chunks.pop(0) if chunks else []
            state = "IN_PROGRESS" if chunks else "COMPLETED"
            return httpx.Response(200, json={"status": state, "stream": batch})
        polls = sum("/status/" in r.url.path for r in seen)
        if polls > progress_polls:
            return httpx.Response(200, json={"id": "job-1", "status": "COMPLETED", "output": 7})
        return httpx.Response(200, json={"id": "job-1", "status": "IN_PROGRESS"})

    return handler, seen


def test_run_sync_polls_on_after_a_non_terminal_reply_without_long_poll() -> None:
    handler, seen = hosted_runpod(progress_polls=4)
    with sync_endpoint(handler) as ep:
        status = ep.run_sync({"x": 1}, timeout_s=30)
    assert status == {"id": "job-1", "status": "COMPLETED", "output": 7}
    status_polls = [r for r in seen if "/status/" in r.url.path]
    assert len(status_polls) == 5
    # The first poll asks for a hold; once it comes back at once unchanged, no more ?wait=.
    assert "wait" in status_polls[0].url.params
    assert all("wait" not in r.url.params for r in status_polls[1:])


async def test_async_stream_without_sse_keeps_every_chunk_once() -> None:
    handler, seen = hosted_runpod(progress_polls=0)
    async with async_endpoint(handler) as ep:
        chunks = [c async for c in ep.job("job-1").stream(timeout_s=30)]
    assert chunks == ["a", "b", "c"]
    # The SSE attempt was answered with a consuming JSON poll, whose chunks were kept.
    assert seen[0].headers["Accept"] == "text/event-stream"


def test_sync_stream_without_sse_keeps_every_chunk_once() -> None:
    handler, _ = hosted_runpod(progress_polls=0)
    with sync_endpoint(handler) as ep:
        assert list(ep.job("job-1").stream(timeout_s=30)) == ["a", "b", "c"]


def test_sse_reconnects_with_last_event_id_and_repeats_nothing() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Content-Type": "text/event-stream"}
        if len(seen) == 1:  # closes after two chunks, before the job ends
            body = 'id: 1\ndata: {"output": "a"}\n\nid: 2\ndata: {"output": "b"}\n\n'
        else:
            assert request.headers["Last-Event-ID"] == "2"
            body = 'id: 3\ndata: {"output": "c"}\n\nevent: status\ndata: {"status": "FAILED"}\n\n'
        return httpx.Response(200, headers=headers, content=body.encode())

    with sync_endpoint(handler) as ep:
        assert list(ep.job("job-1").stream(timeout_s=30)) == ["a", "b", "c"]
    assert len(seen) == 2
