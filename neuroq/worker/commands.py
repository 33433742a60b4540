"""`neuroq worker`: run a handler as a worker attached to a server. Parses, sets up logging and
calls `run_worker`; everything else lives in runtime.py."""

from __future__ import annotations

import click

from neuroq.client import connection
from neuroq.worker.handlers import HandlerLoadError
from neuroq.worker.transport import WorkerAuthError

#: exit status of a worker whose warm-up hook raised (1 is a refused key, 2 bad arguments)
WARMUP_EXIT = 3


class _WarmupError(click.ClickException):
    """The warm-up hook raised: one `Error: warm-up ... failed ...` line, exit status 3."""

    exit_code = WARMUP_EXIT


@click.command()
@click.argument("handler")
@click.option("--url", metavar="URL", help=connection.URL_HELP)
@click.option("--endpoint", metavar="ID", help=connection.ENDPOINT_HELP)
@click.option("--key", metavar="KEY", help=connection.WORKER_KEY_HELP)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs this worker runs at once.",
)
@click.option("--worker-id", default=None, help="Stable worker id.  [default: a random id]")
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
    help="Generators: final output is every chunk.  [default: the handler's own setting]",
)
@click.option(
    "--warmup",
    metavar="MODULE:FUNC",
    default=None,
    help="Run FUNC (sync or async, no arguments) before the first job.  [default: the handler "
    "module's own `warmup` function, if any]",
)
@click.option(
    "--log-level",
    default=None,
    help="DEBUG, INFO, WARNING or ERROR.  [default: $NEUROQ_LOG_LEVEL or INFO]",
)
def worker(
    handler: str,
    url: str | None,
    endpoint: str | None,
    key: str | None,
    concurrency: int,
    worker_id: str | None,
    burst: bool,
    ping_interval_s: float,
    grace_s: float,
    aggregate_stream: bool | None,
    warmup: str | None,
    log_level: str | None,
) -> None:
    """Run HANDLER (module:function or path/to/file.py:function) as a worker.

    The server, endpoint and key are found as for `neuroq send` (docs/client.md, "Settings");
    next to a local `neuroq serve`, no option is needed."""
    from neuroq.config import Settings
    from neuroq.logs import configure_logging
    from neuroq.worker.runtime import WarmupFailed, run_worker

    url = connection.server_url(url)
    endpoint = connection.endpoint_id(endpoint)
    key = connection.worker_key(key, url)
    if not key:
        raise click.UsageError(
            "a worker key is required: pass --key, set NEUROQ_WORKER_KEY, or run next to the "
            "local server that generated .neuroq/worker_key"
        )
    try:
        configure_logging(Settings.from_env(log_level=log_level), secrets=[key])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        run_worker(
            handler,
            connection.server_origin(url),
            endpoint,
            key,
            concurrency,
            worker_id,
            burst,
            ping_interval_s=ping_interval_s,
            grace_s=grace_s,
            aggregate=aggregate_stream,
            warmup=warmup,
        )
    except HandlerLoadError as exc:
        hint = "--warmup" if str(exc).startswith("warm-up") else "HANDLER"
        raise click.BadParameter(str(exc), param_hint=hint) from exc
    except WarmupFailed as exc:
        raise _WarmupError(str(exc)) from exc
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    except WorkerAuthError as exc:
        raise click.ClickException(str(exc)) from exc
