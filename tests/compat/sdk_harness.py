"""Harness for the RunPod compatibility suite (spec section 4): unmodified `runpod` SDK workers and
clients against a real `neuroq serve` process.

SDK workers are the small scripts in `workers/`, each a plain `runpod.serverless.start(...)` call.
They get exactly the environment `neuroq worker-env` prints (parsed from its `export` lines), plus
a unique RUNPOD_POD_ID, a 1 s heartbeat and a private HOME, because a `~/.runpod/config.toml`
would replace the worker key. Each worker runs in its own process group: the SDK forks a heartbeat
process that outlives a SIGKILL of its parent, so "kill the worker" means killing the group, as a
container stop would.

`CountingProxy` sits between an SDK process and the server when a test must count or inspect
requests (the server logs no per-request lines); `WebhookReceiver` records webhook deliveries.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import harness
from harness import ServerProcess, wait_for

WORKERS = Path(__file__).resolve().parent / "workers"
#: the SDK integer-divides RUNPOD_PING_INTERVAL by 1000; below 1000 it crashes (spec 2.1)
PING_INTERVAL_MS = 1000


@dataclass
class SdkWorker:
    """One `runpod.serverless.start` process (and its forked heartbeat process)."""

    worker_id: str
    endpoint: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    events_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """What the handler recorded (workers/_events.py), one dict per line."""
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs, heartbeats stop."""
        harness.end_group(self.proc)


def start_sdk_worker(
    server: ServerProcess,
    script: str,
    endpoint: str,
    worker_id: str,
    tmp_dir: Path,
    *,
    url: str | None = None,
    **extra_env: str,
) -> SdkWorker:
    """Start `workers/<script>` as an SDK worker on `endpoint`; `url` may point at a proxy."""
    home = tmp_dir / f"home-{worker_id}"
    env = harness.sdk_worker_env(server, endpoint, worker_id, home, url)
    events_path = tmp_dir / f"events-{worker_id}.jsonl"
    env.update(
        {
            "RUNPOD_PING_INTERVAL": str(PING_INTERVAL_MS),
            "RUNPOD_LOG_LEVEL": "DEBUG",
            "COMPAT_EVENTS": str(events_path),
            "PYTHONPATH": str(WORKERS),
            **extra_env,
        }
    )
    log_path = tmp_dir / f"sdk-{worker_id}.log"
    proc = harness.spawn([sys.executable, str(WORKERS / script)], log_path, env, cwd=home)
    return SdkWorker(worker_id, endpoint, proc, log_path, events_path)


class Api:
    """Raw HTTP to the client routes, for what the SDK cannot send or does not check."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = server.client()

    def health(self, endpoint: str) -> dict[str, Any]:
        reply = self.http.get(f"/{endpoint}/health")
        assert reply.status_code == 200, reply.text
        body: dict[str, Any] = reply.json()
        return body

    def status(self, endpoint: str, job_id: str) -> dict[str, Any]:
        return harness.status(self.http, endpoint, job_id)

    def wait_status(
        self, endpoint: str, job_id: str, states: set[str], timeout_s: float = 30.0
    ) -> dict[str, Any]:
        """Poll /status until the job is in one of `states`."""
        return wait_for(
            lambda: self.status(endpoint, job_id),
            timeout_s,
            f"job {job_id} on {endpoint} to reach {states}",
            until=lambda body: body["status"] in states,
        )

    def wait_workers(self, endpoint: str, count: int, timeout_s: float = 60.0) -> None:
        """Wait until `count` workers are idle or running on the endpoint (they have polled)."""
        wait_for(
            lambda: self.health(endpoint)["workers"],
            timeout_s,
            f"{count} SDK worker(s) polling on {endpoint}",
            0.2,
            until=lambda workers: workers["idle"] + workers["running"] >= count,
        )


@dataclass
class Seen:
    """One request that passed through a CountingProxy."""

    method: str
    path: str
    status: int
    started: float
    #: the reply body
    body: bytes = b""
    request_body: bytes = b""


@dataclass
class CountingProxy:
    """A loopback reverse proxy that records every request it forwards to `upstream`.

    Long-polls pass through unchanged (one thread per connection), so it can sit in front of SDK
    workers as well as clients."""

    upstream: str
    seen: list[Seen] = field(default_factory=list)
    #: paths of the requests forwarded and not yet answered
    open: list[str] = field(default_factory=list)
    upstreams: set[http.client.HTTPConnection] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def requests(self, needle: str, method: str | None = None) -> list[Seen]:
        with self.lock:
            return [
                s for s in self.seen if needle in s.path and (method is None or s.method == method)
            ]

    def in_flight(self, needle: str) -> int:
        with self.lock:
            return sum(1 for path in self.open if needle in path)

    def start(self) -> CountingProxy:
        proxy = self
        target = urlsplit(self.upstream)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                started = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection", "keep-alive")
                }
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
                with proxy.lock:
                    proxy.open.append(self.path)
                    proxy.upstreams.add(conn)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    reply = conn.getresponse()
                    data = reply.read()
                finally:
                    conn.close()
                    with proxy.lock:
                        proxy.open.remove(self.path)
                        proxy.upstreams.discard(conn)
                with proxy.lock:
                    proxy.seen.append(
                        Seen(self.command, self.path, reply.status, started, data, body or b"")
                    )
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and drop held long-polls, so the server's shutdown need not wait."""
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        with self.lock:
            for conn in self.upstreams:
                if conn.sock is not None:
                    conn.sock.shutdown(2)


@dataclass
class Delivery:
    path: str
    body: Any
    answered: int


class WebhookReceiver:
    """Records webhook POSTs. A path starting with /flaky answers 500 to its first two
    deliveries and 200 after that; /fail always answers 500; anything else answers 200."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                with receiver.lock:
                    earlier = sum(1 for d in receiver.deliveries if d.path == self.path)
                    if self.path.startswith("/fail"):
                        code = 500
                    elif self.path.startswith("/flaky"):
                        code = 500 if earlier < 2 else 200
                    else:
                        code = 200
                    receiver.deliveries.append(Delivery(self.path, body, code))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def to(self, path: str) -> list[Delivery]:
        with self.lock:
            return [d for d in self.deliveries if d.path == path]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
