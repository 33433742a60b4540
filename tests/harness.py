"""Test harness: real server and worker processes on loopback, shared by every test folder.

`start_server` launches `python -m neuroq serve` exactly as a user would, on a free port with its
own data directory and fixed keys, and returns once the server answers HTTP. Tests talk to it over
real sockets; `kill()` sends SIGKILL so durability can be checked by restarting on the same data.
A route test that needs no process (validation, keys, 404s) uses `in_process_app` instead: the
same app, the same keys, no socket, and a fraction of the start-up time.

Helpers the test folders share live here too, once each: `wait_for` (and `wait_for_async`) for
every poll loop, `Background` for a blocking call held while the test acts, and the raw-HTTP
halves of the protocol (`submit`, `status`, `collect_stream`, `RawWorker`, `read_events`,
`SDK_POST_HEADERS`) and the runpod SDK worker's environment (`worker_env`, `sdk_worker_env`).

Every process a test starts ends with the test, children included. `spawn` starts each one as the
leader of a process group of its own and `end_group` ends that whole group, because a child can
outlive its parent (the runpod SDK forks a heartbeat process that kept running for hours after a
SIGKILL of the worker). Each process also inherits RUN_ID_VAR, which is how `leftover_processes`
finds, at the end of the session, any that escaped: even one whose parent died and whose parent
is now init.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest

if TYPE_CHECKING:
    from starlette.testclient import TestClient

API_KEY = "test-client-key"
WORKER_KEY = "test-worker-key"
REPO = Path(__file__).resolve().parent.parent
#: PostgreSQL for tests that run on both stores (`.ci/run` sets it); unset, those cases skip
POSTGRES_URL = os.environ.get("NEUROQ_TEST_POSTGRES_URL", "")
#: what `store_env` accepts, in the order parametrised tests run them
STORE_BACKENDS = ["sqlite", "postgres"]

T = TypeVar("T")

#: inherited by every process this test session starts; its value is this session's alone
RUN_ID_VAR = "NEUROQ_TEST_RUN_ID"
RUN_ID = f"{os.getpid()}-{secrets.token_hex(4)}"
os.environ[RUN_ID_VAR] = RUN_ID


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    pgid: int
    #: the command line, or "[name]" for a process whose command line is empty
    cmdline: str


def _read_process(pid: int) -> tuple[ProcessInfo, bool] | None:
    """(what /proc says of pid, whether it carries this session's RUN_ID); None for a process
    that is gone or a zombie (it has exited; only its parent's wait is missing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        raw_cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone, or not ours to read
        return None
    name, _, rest = stat.rpartition(")")
    state, ppid, pgid = rest.split()[:3]
    if state in ("Z", "X"):
        return None
    cmdline = raw_cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    info = ProcessInfo(pid, int(ppid), int(pgid), cmdline or f"[{name.partition('(')[2]}]")
    return info, f"{RUN_ID_VAR}={RUN_ID}".encode() in environ.split(b"\0")


def leftover_processes() -> list[ProcessInfo]:
    """Every live process this session started, directly or not, other than this one: those that
    descend from it, and those that inherited its RUN_ID (a child's child survives its parent
    reparented to init, where only its environment still says where it came from)."""
    found: dict[int, tuple[ProcessInfo, bool]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (read := _read_process(int(entry.name))) is not None:
            found[read[0].pid] = read
    me = os.getpid()

    def descends_from_me(pid: int) -> bool:
        for _ in range(64):  # deeper than any tree a test builds; ends a cycle of stale reads
            if pid not in found:
                return False
            pid = found[pid][0].ppid
            if pid == me:
                return True
        return False

    return sorted(
        (
            info
            for info, marked in found.values()
            if info.pid != me and (marked or descends_from_me(info.pid))
        ),
        key=lambda info: info.pid,
    )


def spawn(
    cmd: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd`, output to `log_path`, as the leader of a new session and process group, so
    that `end_group` can end it with every process it forked."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd,
            env={**env, RUN_ID_VAR: RUN_ID},
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def terminate(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM `proc` alone, as an operator would, and wait for it; SIGKILL it after `grace_s`.
    What it started is left to its own shutdown code: `end_group` ends the rest."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def end_group(proc: subprocess.Popen[bytes], grace_s: float | None = None) -> None:
    """End `proc` (started by `spawn`) and every process left in its group: with `grace_s`,
    `terminate` it first; then, or at once without `grace_s`, SIGKILL all that is left."""
    if grace_s is not None:
        terminate(proc, grace_s)
    # Members are found by group id among this session's processes only: another session's
    # group that reused the id once this one emptied is never hit.
    members = [p for p in leftover_processes() if p.pgid == proc.pid]
    with contextlib.suppress(ProcessLookupError):
        if proc.poll() is None:
            proc.kill()
        for member in members:
            os.kill(member.pid, signal.SIGKILL)
    proc.wait()


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

    def client(self, timeout_s: float = 60.0) -> httpx.Client:
        """An HTTP client for the client routes: base URL `.../v2`, the client key."""
        return httpx.Client(base_url=self.base_url, headers=self.client_headers, timeout=timeout_s)

    def start(self) -> ServerProcess:
        self.log_path = self.data_dir / "server.log"
        cmd = [sys.executable, "-m", "neuroq", "serve", "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir), *self.args]
        self.proc = spawn(cmd, self.log_path, self.env)
        try:
            wait_for_http(f"{self.url}/v2/probe/health", 30.0, self.proc)
        except BaseException:
            end_group(self.proc)
            raise
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def terminate(self, grace_s: float = 10.0) -> None:
        """SIGTERM the server alone (see `terminate`), for tests of what its shutdown ends;
        `stop` afterwards ends the rest."""
        if self.proc is not None:
            terminate(self.proc, grace_s)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s; then SIGKILL anything else left in its process group."""
        if self.proc is not None:
            end_group(self.proc, grace_s=10.0)

    def kill(self) -> None:
        """SIGKILL the server and its process group: no shutdown code runs, as in a crash."""
        if self.proc is not None:
            end_group(self.proc)

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
        """SIGTERM, SIGKILL after 15 s; then SIGKILL anything else left in its process group."""
        end_group(self.proc, grace_s=15.0)

    def kill(self) -> None:
        """SIGKILL the worker and its process group, as in a crash."""
        end_group(self.proc)


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
    return WorkerProcess(spawn(cmd, log_path, full_env), log_path)


def worker_env(server: ServerProcess, url: str, endpoint: str, worker_id: str) -> dict[str, str]:
    """Run `neuroq worker-env` the way a user would and parse its `export NAME=value` lines."""
    env = {**os.environ, "NEUROQ_WORKER_KEYS": server.worker_key}
    cmd = [sys.executable, "-m", "neuroq", "worker-env", "--endpoint", endpoint]
    cmd += ["--url", url, "--worker-id", worker_id]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=True)
    values: dict[str, str] = {}
    for line in out.stdout.splitlines():
        words = shlex.split(line)
        assert len(words) == 2 and words[0] == "export", f"unexpected worker-env line: {line!r}"
        name, _, value = words[1].partition("=")
        values[name] = value
    return values


def sdk_worker_env(
    server: ServerProcess, endpoint: str, worker_id: str, home: Path, url: str | None = None
) -> dict[str, str]:
    """The environment of an unmodified runpod SDK worker: this one's without RUNPOD_*, what
    `neuroq worker-env` prints (for `url`, the server's by default), and a private HOME, because
    a `~/.runpod/config.toml` there would replace the worker key."""
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
    env.update(worker_env(server, url or server.url, endpoint, worker_id))
    assert env["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"  # offline hosts die without it
    env.update({"HOME": str(home), "PYTHONUNBUFFERED": "1"})
    return env


# -- waiting -------------------------------------------------------------------------------------


def wait_for(
    check: Callable[[], T],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    *,
    until: Callable[[T], object] = bool,
) -> T:
    """Call `check` until `until` holds for what it returns (by default: until that is truthy)
    and return that; after `timeout_s`, fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what}; last: {value!r}"
            )
        time.sleep(interval_s)


async def wait_for_async(
    check: Callable[[], Awaitable[T]],
    timeout_s: float,
    what: str,
    interval_s: float = 0.1,
    *,
    until: Callable[[T], object] = bool,
) -> T:
    """`wait_for` for a coroutine `check`, sleeping without blocking the event loop."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {what}; last: {value!r}"
            )
        await asyncio.sleep(interval_s)


class Background:
    """Run one blocking call (a long-poll, say) in a thread; collect its result or exception
    and when it returned, while the test goes on to make the change it waits for."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        #: when the call returned (time.monotonic()); None while it runs
        self.ended: float | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc
        self.ended = time.monotonic()

    @property
    def elapsed_s(self) -> float:
        return (self.ended or time.monotonic()) - self.started

    def done(self, within_s: float = 0.0) -> bool:
        """Whether the call has returned, waiting up to `within_s` for it."""
        self._thread.join(within_s)
        return not self._thread.is_alive()

    def join(self, timeout_s: float) -> Any:
        """The call's result (or its exception, raised here); fails after `timeout_s`."""
        assert self.done(timeout_s), f"background call did not finish within {timeout_s} s"
        if self.error is not None:
            raise self.error
        return self.result


# -- raw HTTP, as the RunPod clients and SDK send it ----------------------------------------------

#: what the SDK puts on result and stream posts (spec 2.3): JSON text under a form content type
SDK_POST_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"}


def new_endpoint(prefix: str = "ep") -> str:
    """A fresh endpoint id, so tests sharing a server never see each other's jobs."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def submit(client: httpx.Client, ep: str, payload: Any = None, **extra: Any) -> str:
    """POST /run with `payload` as input (`{"n": 1}` if None) through a client whose base URL
    is the server's `/v2`; the new job's id."""
    reply = client.post(
        f"/{ep}/run", json={"input": {"n": 1} if payload is None else payload, **extra}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["status"] == "IN_QUEUE", body
    return str(body["id"])


def status(client: httpx.Client, ep: str, job_id: str) -> dict[str, Any]:
    """GET /status of a job that exists."""
    reply = client.get(f"/{ep}/status/{job_id}")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def collect_stream(client: httpx.Client, ep: str, job_id: str, timeout_s: float) -> list[Any]:
    """Read a job's chunks through GET /stream (a 1 s long-poll each, so no pause between
    reads) until the job ends; every chunk's output, in order. Fails after `timeout_s`."""
    from neuroq.jobs import JobStatus

    chunks: list[Any] = []

    def read() -> str:
        reply = client.get(f"/{ep}/stream/{job_id}", params={"wait": 1000})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        chunks.extend(item["output"] for item in body["stream"])
        return str(body["status"])

    wait_for(
        read,
        timeout_s,
        f"the stream of job {job_id} to end",
        0,
        until=lambda state: JobStatus(state).is_terminal,
    )
    return chunks


def read_events(response: httpx.Response) -> Iterator[dict[str, str]]:
    """Parse a server-sent-events body into dicts of its fields (comments skipped)."""
    event: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = event[name] + "\n" + value if name in event else value


class RawWorker:
    """The worker half of the protocol as raw HTTP (spec 2.2 URL forms, bare worker key), the
    way the runpod SDK speaks it, for one endpoint; `worker_id` can be changed per call."""

    def __init__(self, server: ServerProcess, ep: str, worker_id: str = "w-test") -> None:
        self.http = httpx.Client(
            base_url=server.base_url, headers=server.worker_headers, timeout=60
        )
        self.ep = ep
        self.worker_id = worker_id

    def take_reply(self, worker_id: str | None = None) -> httpx.Response:
        """One job-take long-poll, answered 200 (a job) or 204 (none within the hold)."""
        wid = worker_id or self.worker_id
        return self.http.get(f"/{self.ep}/job-take/{wid}?gpu=local&job_in_progress=0")

    def take(self, worker_id: str | None = None) -> dict[str, Any]:
        """Long-poll until a job is handed out (fails if none comes within the hold)."""
        reply = self.take_reply(worker_id)
        assert reply.status_code == 200, (reply.status_code, reply.text)
        job: dict[str, Any] = reply.json()
        return job

    def post(
        self,
        kind: str,
        job_id: str,
        body: Any,
        *,
        worker_id: str | None = None,
        stream: bool = False,
    ) -> None:
        """POST `body` as JSON to job-done or job-stream; it must be accepted."""
        wid = worker_id or self.worker_id
        flag = str(stream).lower()
        url = f"/{self.ep}/{kind}/{wid}/{job_id}?gpu=local&isStream={flag}"
        reply = self.http.post(url, content=json.dumps(body))
        assert reply.status_code == 200, reply.text

    def done(self, job_id: str, body: dict[str, Any]) -> None:
        self.post("job-done", job_id, body)

    def progress(self, job_id: str, value: Any) -> None:
        self.post("job-done", job_id, {"status": "IN_PROGRESS", "output": value})

    def chunk(self, job_id: str, value: Any) -> None:
        self.post("job-stream", job_id, {"output": value})

    def close(self) -> None:
        self.http.close()


@contextmanager
def in_process_app(data_dir: Path, **settings: Any) -> Iterator[TestClient]:
    """The server's app in this process, for the length of the block: `create_app` with the keys
    `start_server` uses (plus `settings`, Settings fields), driven by Starlette's TestClient,
    whose `with` runs the app's lifespan: the store is opened and the background sweeps run
    before the first request, and both end with the block. The client's base URL is `.../v2`
    and it sends the client key; an exception in a route is raised in the test."""
    from starlette.testclient import TestClient

    from neuroq.api.app import create_app
    from neuroq.config import Settings

    config = Settings(
        data_dir=data_dir,
        api_keys=(API_KEY,),
        worker_keys=(WORKER_KEY,),
        webhook_allow_private=True,
        **settings,
    )
    client = TestClient(
        create_app(config),
        base_url="http://testserver/v2",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    with client:
        yield client


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
