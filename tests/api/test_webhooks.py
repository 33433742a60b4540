"""Webhooks (spec 1.14): real server processes POSTing to a threaded HTTP receiver on loopback,
plus the SSRF classification the sender applies before it connects anywhere."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import harness
import httpx
import pytest
from harness import RawWorker, ServerProcess, new_endpoint, start_server, wait_for

from neuroq.api.webhooks import WebhookRefused, forbidden_reason, resolve_target

RETRY_DELAY_S = 0.3


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (the last one repeats) and records it."""

    statuses: list[int]
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, job_id: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if isinstance(h.body, dict) and h.body.get("id") == job_id]

    def wait_for(self, job_id: str, count: int, timeout_s: float = 15.0) -> list[Hit]:
        return wait_for(
            lambda: self.received(job_id),
            timeout_s,
            f"{count} webhook calls for job {job_id}",
            0.02,
            until=lambda hits: len(hits) >= count,
        )


@pytest.fixture
def receiver() -> Iterator[Callable[[list[int]], Receiver]]:
    started: list[ThreadingHTTPServer] = []

    def make(statuses: list[int]) -> Receiver:
        rec = Receiver(statuses)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with rec.lock:
                    n = len(rec.hits)
                    rec.hits.append(
                        Hit(self.path, dict(self.headers), json.loads(raw), time.monotonic())
                    )
                status = rec.statuses[min(n, len(rec.statuses) - 1)]
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", "/redirected")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        rec.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=rec.server.serve_forever, daemon=True).start()
        started.append(rec.server)
        return rec

    yield make
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(
        tmp_path_factory.mktemp("webhooks"),
        NEUROQ_WEBHOOK_RETRY_DELAY_S=str(RETRY_DELAY_S),
        NEUROQ_WEBHOOK_ALLOW_PRIVATE="true",
        NEUROQ_JOB_TAKE_HOLD_S="1",
    )
    yield proc
    proc.stop()


def submit(server: ServerProcess, ep: str, **extra: Any) -> str:
    with server.client() as client:
        return harness.submit(client, ep, {"q": 1}, **extra)


def status(server: ServerProcess, ep: str, job_id: str) -> dict[str, Any]:
    with server.client() as client:
        return harness.status(client, ep, job_id)


def take_and_post(server: ServerProcess, ep: str, job_id: str, result: dict[str, Any]) -> None:
    worker = RawWorker(server, ep, "wh")
    try:
        assert worker.take()["id"] == job_id
        worker.done(job_id, result)
    finally:
        worker.close()


def test_receiver_failing_twice_gets_exactly_three_attempts(
    srv: ServerProcess, receiver: Callable[[list[int]], Receiver]
) -> None:
    rec = receiver([500, 503, 200])
    ep = new_endpoint("wh")
    job_id = submit(srv, ep, webhook=f"{rec.url}/hook?token=s3cret", s3Config={"accessId": "AK"})
    take_and_post(srv, ep, job_id, {"output": {"text": "hi"}})
    hits = rec.wait_for(job_id, 3)
    final = status(srv, ep, job_id)
    for hit in hits:
        assert hit.path == "/hook?token=s3cret"
        assert hit.headers["Content-Type"] == "application/json"
        assert hit.body == final
        assert "s3Config" not in hit.body
    assert final["status"] == "COMPLETED"
    assert hits[1].at - hits[0].at >= RETRY_DELAY_S - 0.05
    assert hits[2].at - hits[1].at >= RETRY_DELAY_S - 0.05
    # A success ends delivery: a fourth attempt would come within one more retry delay (plus
    # the sender's polling interval), so waiting several delays shows none is coming.
    time.sleep(4 * RETRY_DELAY_S + 1.0)
    assert len(rec.received(job_id)) == 3
    assert "s3cret" not in srv.log()


def test_always_failing_receiver_is_given_up_after_the_retries(
    srv: ServerProcess, receiver: Callable[[list[int]], Receiver]
) -> None:
    rec = receiver([302])  # a redirect is not followed and counts as a failure
    ep = new_endpoint("wh")
    job_id = submit(srv, ep, webhook=f"{rec.url}/hook")
    take_and_post(srv, ep, job_id, {"error": "boom"})
    wait_for(
        lambda: f"webhook for job {job_id}" in srv.log() and "giving up" in srv.log(),
        10,
        "the sender to give up",
        0.05,
    )
    assert len(rec.received(job_id)) == 3
    assert all(h.path == "/hook" for h in rec.hits)


@pytest.mark.slow
def test_fires_for_every_terminal_state(
    srv: ServerProcess, receiver: Callable[[list[int]], Receiver]
) -> None:
    rec = receiver([200])
    hook = f"{rec.url}/all"
    ep_done, ep_cancel, ep_timeout = new_endpoint("wh"), new_endpoint("wh"), new_endpoint("wh")
    completed = submit(srv, ep_done, webhook=hook)
    take_and_post(srv, ep_done, completed, {"output": 1})
    failed = submit(srv, ep_done, webhook=hook)
    take_and_post(srv, ep_done, failed, {"error": "bad"})
    cancelled = submit(srv, ep_cancel, webhook=hook)
    httpx.post(f"{srv.base_url}/{ep_cancel}/cancel/{cancelled}", headers=srv.client_headers)
    timed_out = submit(srv, ep_timeout, webhook=hook, policy={"executionTimeout": 5000})
    worker = RawWorker(srv, ep_timeout, "wt")
    assert worker.take()["id"] == timed_out
    worker.close()
    expected = {
        completed: "COMPLETED",
        failed: "FAILED",
        cancelled: "CANCELLED",
        timed_out: "TIMED_OUT",
    }
    for job_id, state in expected.items():
        [hit] = rec.wait_for(job_id, 1)
        assert hit.body["status"] == state
    assert rec.received(failed)[0].body["error"] == "bad"


def test_private_target_refused_when_not_allowed(
    tmp_path: Path, receiver: Callable[[list[int]], Receiver]
) -> None:
    rec = receiver([200])
    server = start_server(tmp_path / "strict", NEUROQ_WEBHOOK_ALLOW_PRIVATE="false")
    try:
        ep = new_endpoint("wh")
        job_id = submit(server, ep, webhook=f"{rec.url}/hook/secret-path")
        take_and_post(server, ep, job_id, {"output": 1})
        wait_for(
            lambda: f"webhook for job {job_id} refused" in server.log(), 10, "a refusal logged"
        )
        assert "loopback" in server.log()
        assert "secret-path" not in server.log()
        assert rec.hits == []
        assert status(server, ep, job_id)["status"] == "COMPLETED"
    finally:
        server.stop()


# -- SSRF classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.20", "private"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("100.64.0.1", "CGNAT"),
        ("100.127.255.254", "CGNAT"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("8.8.8.8", None),
        ("100.128.0.1", None),
        ("93.184.216.34", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_forbidden_reason(address: str, reason: str | None) -> None:
    assert forbidden_reason(address) == reason


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("http:///nohost", "no host"),
        ("http://127.0.0.1:9/x", "127.0.0.1, a loopback address"),
        ("http://localhost:9/x", "loopback"),
        ("http://[::1]/x", "loopback"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://100.100.100.200/", "CGNAT"),
    ],
)
async def test_resolve_target_refuses(url: str, message: str) -> None:
    with pytest.raises(WebhookRefused, match=message.replace("(", r"\(")):
        await resolve_target(url, allow_private=False, timeout_s=5)


async def test_resolve_target_pins_the_checked_address() -> None:
    target = await resolve_target("https://8.8.8.8:8443/h?x=1", allow_private=False, timeout_s=5)
    assert str(target.url) == "https://8.8.8.8:8443/h?x=1"
    assert target.headers == {"Host": "8.8.8.8:8443"}
    assert target.extensions == {"sni_hostname": "8.8.8.8"}
    target = await resolve_target(
        "http://[2606:4700:4700::1111]/h", allow_private=False, timeout_s=5
    )
    assert target.url.host == "2606:4700:4700::1111"
    assert target.headers == {"Host": "[2606:4700:4700::1111]"}
    assert target.extensions == {}


async def test_resolve_target_allow_private_skips_the_check() -> None:
    target = await resolve_target("http://127.0.0.1:9/x", allow_private=True, timeout_s=5)
    assert str(target.url) == "http://127.0.0.1:9/x"
    with pytest.raises(WebhookRefused, match="scheme"):
        await resolve_target("gopher://127.0.0.1/", allow_private=True, timeout_s=5)
