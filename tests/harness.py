"""Test harness: real server and worker processes on loopback, shared by every test folder.

`start_server` launches `python -m neuroq serve` exactly as a user would, on a free port with its
own data directory and fixed keys, and returns once the server answers HTTP. Tests talk to it over
real sockets; `kill()` sends SIGKILL so durability can be checked by restarting on the same data.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

API_KEY = "test-client-key"
WORKER_KEY = "test-worker-key"
REPO = Path(__file__).resolve().parent.parent
#: PostgreSQL for tests that run on both stores (`.ci/run` sets it); unset, those cases skip
POSTGRES_URL = os.environ.get("NEUROQ_TEST_POSTGRES_URL", "")
#: what `store_env` accepts, in the order parametrised tests run them
STORE_BACKENDS = ["sqlite", "postgres"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until something answers HTTP at url (any status), the process dies, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving {url}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered at {url} within {timeout_s} s")


@dataclass
class ServerProcess:
    data_dir: Path
    port: int
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    api_key: str = API_KEY
    worker_key: str = WORKER_KEY

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The RunPod-style base URL clients are given: `.../v2`."""
        return f"{self.url}/v2"

    @property
    def client_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def worker_headers(self) -> dict[str, str]:
        return {"Authorization": self.worker_key}

    def start(self) -> ServerProcess:
        self.log_path = self.data_dir / "server.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child process owns it
        cmd = [sys.executable, "-m", "neuroq", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir), *self.args]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_http(f"{self.url}/v2/probe/health", 30.0, self.proc)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()


def server_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "NEUROQ_API_KEYS": API_KEY,
            "NEUROQ_WORKER_KEYS": WORKER_KEY,
            "NEUROQ_WEBHOOK_ALLOW_PRIVATE": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def start_server(data_dir: Path, *args: str, **env: str) -> ServerProcess:
    """Start a server; `env` holds extra NEUROQ_* settings (e.g. NEUROQ_RETENTION_RUN_S="1")."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return ServerProcess(data_dir, free_port(), server_env(**env), list(args)).start()


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_worker(
    server: ServerProcess,
    handler: str,
    endpoint: str,
    log_dir: Path,
    *args: str,
    **env: str,
) -> WorkerProcess:
    """Start `python -m neuroq worker HANDLER --url ... --endpoint ...` against a server."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"worker-{endpoint}-{time.monotonic_ns()}.log"
    full_env = dict(os.environ)
    full_env.update({"NEUROQ_WORKER_KEY": server.worker_key, "PYTHONUNBUFFERED": "1", **env})
    cmd = [sys.executable, "-m", "neuroq", "worker", handler, "--url", server.url]
    cmd += ["--endpoint", endpoint, *args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    return WorkerProcess(proc, log_path)


def postgres_store_url(schema: str) -> str:
    """NEUROQ_STORE for the test database, with the tables in `schema` (see docs/scaling.md)."""
    return f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"


def drop_postgres_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def store_env(backend: str) -> Iterator[dict[str, str]]:
    """Extra server environment for one store backend: nothing for SQLite (each server's data
    directory), or NEUROQ_STORE naming a fresh PostgreSQL schema that every server started with
    it shares, dropped on exit. Stop those servers before leaving the block. Skips the test when
    PostgreSQL is asked for but NEUROQ_TEST_POSTGRES_URL is unset."""
    if backend == "sqlite":
        yield {}
        return
    if backend != "postgres":
        raise ValueError(f"backend={backend!r}: expected one of {STORE_BACKENDS}")
    if not POSTGRES_URL:
        pytest.skip("set NEUROQ_TEST_POSTGRES_URL to run this on PostgreSQL")
    schema = f"t_{secrets.token_hex(6)}"
    try:
        yield {"NEUROQ_STORE": postgres_store_url(schema)}
    finally:
        drop_postgres_schema(schema)
