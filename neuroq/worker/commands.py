"""`neuroq worker`: run a handler as a worker attached to a server. Parses, sets up logging and
calls `run_worker`; everything else lives in runtime.py."""

from __future__ import annotations

import os

import click

from neuroq.worker.handlers import HandlerLoadError
from neuroq.worker.transport import WorkerAuthError


@click.command()
@click.argument("handler")
@click.option(
    "--url",
    default=lambda: os.environ.get("NEUROQ_URL", "http://127.0.0.1:8000"),
    show_default="$NEUROQ_URL or http://127.0.0.1:8000",
    help="Server address, http://HOST:PORT.",
)
@click.option("--endpoint", required=True, help="Endpoint id whose jobs this worker takes.")
@click.option(
    "--key",
    envvar="NEUROQ_WORKER_KEY",
    show_envvar=True,
    help="Worker key (sent bare in the Authorization header).",
)
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--worker-id", default=None, help="Stable worker id; a random one by default.")
@click.option("--burst", is_flag=True, help="Exit once the queue is empty and no job runs.")
@click.option(
    "--ping-interval",
    "ping_interval_s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between heartbeats.",
)
@click.option(
    "--grace",
    "grace_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds in-flight jobs get to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--aggregate-stream/--no-aggregate-stream",
    default=None,
    help="Generators: final output is every chunk (default: the handler's own setting).",
)
@click.option("--log-level", default=None, show_default="$NEUROQ_LOG_LEVEL or INFO")
def worker(
    handler: str,
    url: str,
    endpoint: str,
    key: str | None,
    concurrency: int,
    worker_id: str | None,
    burst: bool,
    ping_interval_s: float,
    grace_s: float,
    aggregate_stream: bool | None,
    log_level: str | None,
) -> None:
    """Run HANDLER (module:function or path/to/file.py:function) as a worker."""
    from neuroq.config import Settings
    from neuroq.logs import configure_logging
    from neuroq.worker.runtime import run_worker

    if not key:
        raise click.UsageError("a worker key is required: pass --key or set NEUROQ_WORKER_KEY")
    try:
        configure_logging(Settings.from_env(log_level=log_level), secrets=[key])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        run_worker(
            handler,
            url,
            endpoint,
            key,
            concurrency,
            worker_id,
            burst,
            ping_interval_s=ping_interval_s,
            grace_s=grace_s,
            aggregate=aggregate_stream,
        )
    except HandlerLoadError as exc:
        raise click.BadParameter(str(exc), param_hint="HANDLER") from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except WorkerAuthError as exc:
        raise click.ClickException(str(exc)) from exc
