"""Helpers for the scaler tests: configure an endpoint, count the worker processes the scaler
started for it (found in /proc by the marker each one carries), watch that count over time."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from harness import ServerProcess

from neuroq.scaler.processes import MARKER_VAR

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
#: a scaler-test handler (tests/serverless/handlers.py), importable by `neuroq worker` by file
RECORD = f"{HERE / 'handlers.py'}:record"
#: quick scaler settings for tests: decide every 0.1 s, short grace, leases lost after 2 s
SERVER_ENV = {
    "NEUROQ_SCALER_INTERVAL_S": "0.1",
    "NEUROQ_SCALER_STOP_GRACE_S": "10",
    "NEUROQ_WORKER_LOST_S": "2",
}


def new_endpoint(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client(server: ServerProcess, timeout_s: float = 60.0) -> httpx.Client:
    """The client routes (`.../v2`) with the client key."""
    return httpx.Client(base_url=server.base_url, headers=server.client_headers, timeout=timeout_s)


def submit(client: httpx.Client, ep: str, value: Any) -> str:
    reply = client.post(f"/{ep}/run", json={"input": value})
    assert reply.status_code == 200, reply.text
    job_id: str = reply.json()["id"]
    return job_id


def wait_for(
    check: Callable[[], T],
    timeout_s: float,
    what: str,
    *,
    until: Callable[[T], object] = bool,
    interval_s: float = 0.05,
) -> T:
    """Poll `check` until `until` holds for its value; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if until(value):
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}; last: {value!r}"
        time.sleep(interval_s)


def configure(server: ServerProcess, ep: str, **settings: Any) -> dict[str, Any]:
    reply = httpx.put(
        f"{server.url}/endpoints/{ep}", json=settings, headers=server.client_headers, timeout=10
    )
    assert reply.status_code in (200, 201), reply.text
    body: dict[str, Any] = reply.json()
    return body


def worker_leaders(server: ServerProcess, ep: str, state_dir: Path | None = None) -> dict[str, int]:
    """worker id -> pid of each live worker process the scaler started for `ep` (the server's
    own scaler, or the one keeping its pidfiles in `state_dir`)."""
    state_dir = state_dir or server.data_dir / "scaler"
    prefix = f"{MARKER_VAR}={state_dir.resolve()}:{ep}-".encode()
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] in ("Z", "X") or int(fields[2]) != int(entry.name):
            continue  # exited, or not a session leader (the SDK's forked heartbeat)
        for var in environ.split(b"\0"):
            if var.startswith(prefix):
                found[var.decode().rpartition(":")[2]] = int(entry.name)
    return found


class Watch:
    """Samples the worker count of an endpoint in a thread until stopped: the peak and the
    sequence of distinct counts seen."""

    def __init__(self, server: ServerProcess, ep: str, interval_s: float = 0.05) -> None:
        self.counts: list[int] = []
        self._server, self._ep = server, ep
        self._stop = threading.Event()
        self._sample()  # the state when the watch begins, before the caller goes on
        self._thread = threading.Thread(
            target=self._run, args=(server, ep, interval_s), daemon=True
        )
        self._thread.start()

    def _run(self, server: ServerProcess, ep: str, interval_s: float) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(interval_s)

    def _sample(self) -> None:
        count = len(worker_leaders(self._server, self._ep))
        if not self.counts or self.counts[-1] != count:
            self.counts.append(count)

    @property
    def peak(self) -> int:
        return max(self.counts, default=0)

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(5)
        self._sample()  # the state the test has just waited for
        return self.counts


def runs(log: Path) -> dict[str, int]:
    """job id -> how many times the record handler finished it."""
    counts: dict[str, int] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            job_id = line.split()[0]
            counts[job_id] = counts.get(job_id, 0) + 1
    return counts


def wait_all_done(client: httpx.Client, ep: str, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(ids)
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} jobs unfinished, e.g. {pending[0]}"
        reply = client.get(f"/{ep}/status/{pending[0]}", params={"wait": 5000})
        status = reply.json()["status"]
        assert status in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), reply.text
        if status == "COMPLETED":
            pending.pop(0)
