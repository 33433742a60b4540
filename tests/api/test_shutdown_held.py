"""Stopping the server ends the requests clients hold open: a real server (tests/harness.py).

A status?wait, runsync, status-sync, SSE stream or OpenAI request held when SIGTERM arrived kept
uvicorn waiting its full 5 s graceful timeout, then was cancelled with an ASGI traceback each;
only the workers' long-polls ended at once (neuroq.api.stopping). This failed here first.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
from harness import Background, new_endpoint, start_server, submit, wait_for

from neuroq.api.stopping import ServerStop
from neuroq.store.base import Notifier

#: a stop that waits for nothing is well under this; one that waits for uvicorn's grace is 5 s
STOP_WITHIN_S = 2.0


def _sse_events(server: Any, ep: str, job_id: str) -> list[str]:
    """Read the job's event stream until the server ends it; the events' first lines."""
    firsts: list[str] = []
    headers = {**server.client_headers, "Accept": "text/event-stream"}
    with httpx.stream(
        "GET", f"{server.base_url}/{ep}/stream/{job_id}", headers=headers, timeout=60
    ) as reply:
        reply.raise_for_status()
        for block in reply.iter_text():
            firsts += [event.split("\n", 1)[0] for event in block.split("\n\n") if event]
    return firsts


def test_sigterm_ends_held_client_requests_at_once_and_quietly(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv")
    ep = new_endpoint()
    try:
        with server.client() as client:
            job_id = submit(client, ep, {"n": 1})
        base = f"{server.base_url}"
        held = {
            "status": Background(
                lambda: httpx.get(
                    f"{base}/{ep}/status/{job_id}?wait=60000",
                    headers=server.client_headers,
                    timeout=60,
                )
            ),
            "status-sync": Background(
                lambda: httpx.get(
                    f"{base}/{ep}/status-sync/{job_id}?wait=60000",
                    headers=server.client_headers,
                    timeout=60,
                )
            ),
            "runsync": Background(
                lambda: httpx.post(
                    f"{base}/{ep}/runsync?wait=60000",
                    json={"input": {}},
                    headers=server.client_headers,
                    timeout=60,
                )
            ),
            "sse": Background(lambda: _sse_events(server, ep, job_id)),
            "openai": Background(
                lambda: httpx.post(
                    f"{base}/{ep}/openai/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    headers=server.client_headers,
                    timeout=60,
                )
            ),
        }
        time.sleep(1.0)  # every request is in its hold by now
        assert not any(call.done() for call in held.values())
        started = time.monotonic()
        server.terminate()
        elapsed_s = time.monotonic() - started
        replies = {name: call.join(10.0) for name, call in held.items()}
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert "ASGI" not in log, log
    assert elapsed_s < STOP_WITHIN_S, f"the server took {elapsed_s:.1f} s to stop"
    # Each hold was answered with the job as it stood, or ended its stream cleanly.
    for name in ("status", "status-sync", "runsync"):
        reply = replies[name]
        assert reply.status_code == 200, (name, reply.text)
        assert reply.json()["status"] == "IN_QUEUE", (name, reply.text)
    assert replies["sse"] == [], replies["sse"]
    openai = replies["openai"]
    assert openai.status_code == 503, openai.text
    assert openai.json()["error"]["code"] == "server_stopping", openai.text
    assert openai.headers["retry-after"]


def test_sigterm_ends_an_openai_stream_with_an_error_event(tmp_path: Path) -> None:
    """A stream already relaying chunks ends with an OpenAI error event, not a cut connection,
    and its job is cancelled: nobody is left to read the rest."""
    server = start_server(tmp_path / "srv")
    ep = new_endpoint()
    worker = httpx.Client(base_url=server.base_url, headers=server.worker_headers, timeout=40)
    try:

        def stream() -> list[str]:
            body = {"model": "m", "prompt": "hi", "stream": True}
            url = f"{server.base_url}/{ep}/openai/v1/completions"
            with httpx.stream(
                "POST", url, json=body, headers=server.client_headers, timeout=60
            ) as reply:
                assert reply.status_code == 200, reply.read()
                return [line for line in reply.iter_lines() if line.startswith("data:")]

        call = Background(stream)
        with worker:
            job = wait_for(lambda: _take(worker, ep), 10.0, "the OpenAI job")
            chunk = {"output": {"choices": [{"text": "a"}]}}
            worker.post(f"/{ep}/job-stream/w-1/{job['id']}", json=chunk).raise_for_status()
            time.sleep(0.5)
            started = time.monotonic()
            server.terminate()
            elapsed_s = time.monotonic() - started
        lines = call.join(10.0)
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log
    assert elapsed_s < STOP_WITHIN_S, f"the server took {elapsed_s:.1f} s to stop"
    assert len(lines) == 2, lines
    assert '"server_stopping"' in lines[1], lines


def _take(worker: httpx.Client, ep: str) -> dict[str, Any] | None:
    reply = worker.get(f"/{ep}/job-take/w-1")
    return reply.json() if reply.status_code == 200 else None


async def test_a_held_wait_ends_when_the_server_stops_and_a_late_one_does_not_hold() -> None:
    """`ServerStop.wait_until` in-process: the held wait wakes on `begin`, and one that starts
    after it answers at once, without running its check."""
    stop = ServerStop(Notifier())
    checks = 0

    async def never() -> str | None:
        nonlocal checks
        checks += 1
        return None

    loop = asyncio.get_running_loop()
    started = loop.time()
    held = asyncio.ensure_future(stop.wait_until("t", never, 30.0, 30.0))
    await asyncio.sleep(0.05)
    stop.begin()
    assert await asyncio.wait_for(held, 1.0) is None
    assert loop.time() - started < 1.0
    seen = checks
    assert await stop.wait_until("t", never, 30.0, 30.0) is None
    assert checks == seen


async def test_a_plain_wait_on_any_notifier_ends_when_the_server_stops() -> None:
    """`ServerStop.wait` (a version wait, as the dashboard's live parts hold) wakes on `begin`
    on a notifier other than the store's too."""
    stop = ServerStop(Notifier())
    other = Notifier()
    held = asyncio.ensure_future(stop.wait("t", other.version("t"), 30.0, other))
    await asyncio.sleep(0.05)
    stop.begin()
    assert await asyncio.wait_for(held, 1.0) is True
    assert await stop.wait("t", other.version("t"), 30.0, other) is False
