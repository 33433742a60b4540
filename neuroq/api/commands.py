"""`neuroq serve` and `neuroq worker-env`.

`serve` runs the job server under uvicorn and, with `--worker`, supervises local worker processes:
they start once the socket listens (so their first job-take does not fail) and get SIGTERM when
the server stops, so Ctrl-C or a SIGTERM leaves no orphan behind. The store is opened once before
uvicorn starts, so a database that cannot be opened ends `serve` with one line saying which and
what to do, instead of a traceback from inside uvicorn's startup. Its shutdown first ends the
workers' held long-polls (neuroq.api.stopping), so a stop takes no graceful timeout and logs no
traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click
import uvicorn

from neuroq.client import connection
from neuroq.config import DEFAULT_ENDPOINT, Settings
from neuroq.store.base import JobStore

if TYPE_CHECKING:
    from neuroq.api.stopping import ServerStop

log = logging.getLogger("neuroq.serve")

#: how long a worker gets to finish after SIGTERM before it is killed
WORKER_STOP_GRACE_S = 15.0
#: how long an idle keep-alive connection stays open. The runpod SDK worker reuses a pooled
#: connection idle for up to 15 s (aiohttp's default), and a sync handler blocks its event loop
#: meanwhile; had the server closed that connection first (uvicorn's default is 5 s), the result
#: post after a 5-15 s handler meets a dead socket and the SDK drops the result (docs/runpod.md,
#: Deliberate differences).
KEEP_ALIVE_S = 75


@click.command()
@click.option(
    "--host", default=None, help="Interface to listen on.  [default: $NEUROQ_HOST or 127.0.0.1]"
)
@click.option("--port", type=int, default=None, help="TCP port.  [default: $NEUROQ_PORT or 8000]")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Database, generated keys and other state.  {connection.DATA_DIR_DEFAULT}",
)
@click.option(
    "--store",
    default=None,
    help="postgresql://... URL.  [default: $NEUROQ_STORE or SQLite in the data dir]",
)
@click.option(
    "--worker",
    "handlers",
    multiple=True,
    metavar="HANDLER",
    help="Also run a local worker with this handler (module:function or file.py:function). "
    "Repeatable.",
)
@click.option(
    "--endpoint", default=DEFAULT_ENDPOINT, show_default=True, help="Endpoint of --worker."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Concurrency of each --worker.",
)
@click.option(
    "--scaler/--no-scaler",
    default=None,
    help="Start and stop the workers of configured endpoints.  [default: $NEUROQ_SCALER or on]",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Least severe level logged.  [default: $NEUROQ_LOG_LEVEL or INFO]",
)
def serve(
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    store: str | None,
    handlers: tuple[str, ...],
    endpoint: str,
    concurrency: int,
    scaler: bool | None,
    log_level: str | None,
) -> None:
    """Run the job server (and optionally local workers)."""
    from neuroq.api.app import create_app
    from neuroq.api.auth import load_keys
    from neuroq.jobs import is_path_safe
    from neuroq.logs import add_secrets, configure_logging
    from neuroq.store import create_store

    if handlers and not is_path_safe(endpoint):
        raise click.BadParameter("use 1-128 characters of A-Z a-z 0-9 _ -", param_hint="--endpoint")
    try:
        settings = Settings.from_env(
            host=host,
            port=port,
            data_dir=data_dir,
            store=store,
            scaler=scaler,
            log_level=log_level.upper() if log_level else None,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        configure_logging(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        job_store = create_store(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    _check_store(job_store)
    app = create_app(settings, job_store)
    if handlers:
        # Its own workers are on their way: no "never served" warning while they start.
        app.state.local_endpoints = frozenset({endpoint})
    add_secrets([*app.state.keys.client, *app.state.keys.worker])  # generated ones too
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="auto",  # uvloop when installed
        http="auto",  # httptools when installed
        access_log=False,
        log_config=None,  # uvicorn's loggers propagate to the handler configure_logging set
        lifespan="on",
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_S,
    )
    stop: ServerStop = app.state.server_stop
    if not handlers:
        _Server(config, stop).run()
        return
    worker_key = load_keys(settings).worker[0]
    supervisor = _WorkerSupervisor(handlers, endpoint, concurrency, worker_key)
    server = _SupervisingServer(config, stop, supervisor)
    runner = asyncio.Runner(loop_factory=config.get_loop_factory())
    with runner:
        runner.run(_serve_with_workers(server, settings, supervisor))


def _check_store(store: JobStore) -> None:
    """Open and close the store, exiting with its one-line message if it cannot be opened."""
    from neuroq.store.errors import StoreError

    async def open_and_close() -> None:
        await store.open()
        await store.close()

    try:
        asyncio.run(open_and_close())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


class _WorkerSupervisor:
    """The local worker processes of `serve --worker`."""

    def __init__(
        self, handlers: tuple[str, ...], endpoint: str, concurrency: int, worker_key: str
    ) -> None:
        self.handlers = handlers
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.worker_key = worker_key
        self.procs: list[asyncio.subprocess.Process] = []
        self.stopping = False

    async def start(self, url: str) -> None:
        env = {**os.environ, "NEUROQ_WORKER_KEY": self.worker_key}
        for handler in self.handlers:
            if self.stopping:
                return
            cmd = [sys.executable, "-m", "neuroq", "worker", handler, "--url", url]
            cmd += ["--endpoint", self.endpoint, "--concurrency", str(self.concurrency)]
            proc = await asyncio.create_subprocess_exec(*cmd, env=env)
            self.procs.append(proc)
            log.info("started worker %s (pid %d) on endpoint %s", handler, proc.pid, self.endpoint)

    def signal_stop(self) -> None:
        """Send SIGTERM to every worker; safe to call from a signal handler, and repeatedly."""
        self.stopping = True
        for proc in self.procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        self.signal_stop()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), WORKER_STOP_GRACE_S)
            except TimeoutError:
                log.warning("worker pid %d ignored SIGTERM; killing it", proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


class _Server(uvicorn.Server):
    """uvicorn's server, whose shutdown ends the app's held long-polls before it waits for the
    requests in flight: left held, they would be cancelled with a traceback each after uvicorn's
    graceful timeout."""

    def __init__(self, config: uvicorn.Config, stop: ServerStop) -> None:
        super().__init__(config)
        self.server_stop = stop

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.server_stop.begin()
        await super().shutdown(sockets)


class _SupervisingServer(_Server):
    """The server, which also tells the workers to stop the moment SIGTERM/SIGINT arrives.

    uvicorn re-raises the signal once its own shutdown is done, which ends the process; the
    workers must have been told before that."""

    def __init__(
        self, config: uvicorn.Config, stop: ServerStop, supervisor: _WorkerSupervisor
    ) -> None:
        super().__init__(config, stop)
        self.supervisor = supervisor

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.supervisor.signal_stop()
        super().handle_exit(sig, frame)


async def _serve_with_workers(
    server: _SupervisingServer, settings: Settings, supervisor: _WorkerSupervisor
) -> None:
    """Run uvicorn; start the workers once it listens; stop them before it returns."""
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if serving.done():
                return  # startup failed; awaiting `serving` below reports why
            await asyncio.sleep(0.05)
        await supervisor.start(_local_url(settings, server))
        while not serving.done() and not server.should_exit:
            await asyncio.wait({serving}, timeout=0.2)
    finally:
        await supervisor.stop()
        await serving


def _local_url(settings: Settings, server: uvicorn.Server) -> str:
    """The URL local workers use: loopback when bound to all interfaces, the real port when 0."""
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    port = settings.port
    with contextlib.suppress(AttributeError, IndexError):
        port = server.servers[0].sockets[0].getsockname()[1]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@click.command("worker-env")
@click.option("--endpoint", metavar="ID", help=connection.ENDPOINT_HELP)
@click.option("--url", metavar="URL", help=connection.URL_HELP)
@click.option(
    "--worker-id",
    default=None,
    help="Worker id, the worker's RUNPOD_POD_ID.  [default: a random id]",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where a generated worker key is kept.  {connection.DATA_DIR_DEFAULT}",
)
def worker_env(
    endpoint: str | None, url: str | None, worker_id: str | None, data_dir: Path | None
) -> None:
    """Print the environment an unmodified RunPod worker needs to attach: the job-take, result,
    stream and ping URLs of the endpoint on this server, a worker id and the worker key.

    Use as `eval "$(neuroq worker-env --endpoint ep)"` before starting the worker."""
    from neuroq.api.auth import load_keys
    from neuroq.jobs import is_path_safe, new_worker_id
    from neuroq.scaler.processes import runpod_worker_env

    endpoint = connection.endpoint_id(endpoint)
    if not is_path_safe(endpoint):
        raise click.BadParameter("use 1-128 characters of A-Z a-z 0-9 _ -", param_hint="--endpoint")
    url = connection.server_origin(connection.server_url(url))
    worker_id = worker_id or new_worker_id()
    if not is_path_safe(worker_id):
        raise click.BadParameter(
            "use 1-128 characters of A-Z a-z 0-9 _ -", param_hint="--worker-id"
        )
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--url")
    try:
        settings = Settings.from_env(data_dir=data_dir)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    values = runpod_worker_env(url, endpoint, worker_id, load_keys(settings).worker[0])
    for name, value in values.items():
        click.echo(f"export {name}={shlex.quote(value)}")
