"""`neuroq scaler` (the scaler against a remote server) and `neuroq endpoint ...` (endpoint
settings through the server's `/endpoints` routes). Both only parse and call.

The server and the keys are found as for `neuroq send` (`neuroq.client.connection`: the flag,
then the environment, then a local server's key files); `--data-dir` names the directory those
key files are read from.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import httpx

from neuroq.client import connection

_URL = click.option("--url", metavar="URL", help=connection.URL_HELP)
_KEY = click.option("--key", metavar="KEY", help=connection.CLIENT_KEY_HELP)
_DATA_DIR_HELP = (
    "Data directory whose api_key and worker_key files are read for a server on this machine"
)


def _data_dir_option(help: str) -> Any:
    return click.option(
        "--data-dir",
        metavar="DIR",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help=f"{help}.  {connection.DATA_DIR_DEFAULT}",
    )


_DATA_DIR = _data_dir_option(_DATA_DIR_HELP)


def _environ(data_dir: Path | None) -> Mapping[str, str]:
    """The environment the resolution reads, with --data-dir standing for $NEUROQ_DATA_DIR."""
    if data_dir is None:
        return os.environ
    return {**os.environ, "NEUROQ_DATA_DIR": str(data_dir)}


def _server(url: str | None, env: Mapping[str, str]) -> str:
    """The server's origin (`http://host:port`; a trailing /v2 given is dropped)."""
    return connection.server_origin(connection.server_url(url, env))


def _client_key(key: str | None, url: str, env: Mapping[str, str]) -> str:
    found = connection.client_key(key, url, env)
    if found is None:
        raise click.UsageError(
            f"no client key for {url}: give --key or set $RUNPOD_API_KEY"
            " (for a server on this machine, its data directory's api_key file is read)"
        )
    return found


@click.command()
@_URL
@_KEY
@click.option(
    "--worker-key",
    metavar="KEY",
    help="Worker key the started workers use.  [default: $NEUROQ_WORKER_KEY, or for a server on"
    " this machine $NEUROQ_DATA_DIR/worker_key (.neuroq/worker_key)]",
)
@_data_dir_option(
    "Where the scaler keeps its workers' pidfiles (DIR/scaler), and whose key files are read"
    " for a server on this machine"
)
@click.option(
    "--interval",
    "interval_s",
    type=click.FloatRange(min=0.05),
    default=0.5,
    show_default=True,
    help="Seconds between looks at the server's queues.",
)
@click.option(
    "--grace",
    "grace_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a stopped worker gets to finish its jobs before it is killed.",
)
@click.option(
    "--ping-interval",
    "ping_interval_s",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Heartbeat interval of started neuroq workers; keep it under the server's "
    "NEUROQ_WORKER_LOST_S / 3.",
)
def scaler(
    url: str | None,
    key: str | None,
    worker_key: str | None,
    data_dir: Path | None,
    interval_s: float,
    grace_s: float,
    ping_interval_s: float,
) -> None:
    """Start and stop workers for a server's configured endpoints, on this machine.

    \b
    Examples:
      neuroq scaler                      # next to a local `neuroq serve --no-scaler`
      neuroq scaler --url https://queue.example --key CLIENT_KEY --worker-key WORKER_KEY
    """
    from neuroq.config import Settings
    from neuroq.logs import configure_logging
    from neuroq.scaler.scaler import Scaler, ScalerBusy
    from neuroq.scaler.source import HTTPSource

    env = _environ(data_dir)
    server = _server(url, env)
    client_key = _client_key(key, server, env)
    workers_key = connection.worker_key(worker_key, server, env)
    if workers_key is None:
        raise click.UsageError(
            f"no worker key for {server}: give --worker-key or set $NEUROQ_WORKER_KEY"
            " (for a server on this machine, its data directory's worker_key file is read)"
        )
    settings = Settings.from_env(data_dir=data_dir)
    configure_logging(settings, secrets=[client_key, workers_key])
    source = HTTPSource(server, client_key, workers_key)
    runner = Scaler(
        source,
        server,
        workers_key,
        settings.data_dir / "scaler",
        interval_s=interval_s,
        stop_grace_s=grace_s,
        ping_interval_s=ping_interval_s,
    )
    try:
        asyncio.run(runner.run())
    except ScalerBusy as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        pass


# -- neuroq endpoint ---------------------------------------------------------------------------


@click.group()
def endpoint() -> None:
    """Configure endpoints: workers, scaling rule, default executionTimeout.

    The server and key are found as for `neuroq send`; next to a local `neuroq serve`, no
    option is needed.
    """


def _settings_options(fn: Any) -> Any:
    """The settings flags; one left out keeps its value (update) or takes its default (create)."""
    options = [
        click.option(
            "--handler",
            metavar="MODULE:FUNC",
            help="What `neuroq worker` runs: MODULE:FUNCTION or FILE.py:FUNCTION.",
        ),
        click.option(
            "--command",
            "command_line",
            metavar="CMD",
            help="An external worker command instead (e.g. 'python rp_handler.py'), split like"
            " a shell.",
        ),
        click.option(
            "--workers-min", type=int, help="Workers kept running even when idle.  [default: 0]"
        ),
        click.option("--workers-max", type=int, help="Most workers at once.  [default: 3]"),
        click.option(
            "--workers-spare",
            type=int,
            help="Idle workers kept started beyond the busy ones, within --workers-max."
            "  [default: 0]",
        ),
        click.option(
            "--idle-timeout",
            type=int,
            help="Seconds without a job before a worker is drained.  [default: 5]",
        ),
        click.option(
            "--scaler-type",
            type=click.Choice(["QUEUE_DELAY", "REQUEST_COUNT"]),
            help="Scaling rule.  [default: QUEUE_DELAY]",
        ),
        click.option(
            "--scaler-value",
            type=int,
            help="QUEUE_DELAY: seconds the oldest job may wait before a worker is added;"
            " REQUEST_COUNT: jobs per worker.  [default: 4]",
        ),
        click.option("--concurrency", type=int, help="Jobs one worker runs at once.  [default: 1]"),
        click.option(
            "--execution-timeout",
            type=int,
            metavar="MS",
            help="executionTimeout of jobs submitted without one, in ms.  [default: the server's]",
        ),
        click.option(
            "--env",
            "env_items",
            multiple=True,
            metavar="NAME=VALUE",
            help="A variable added to each worker's environment; repeat for more.",
        ),
        click.option(
            "--input-schema",
            metavar="FILE|JSON",
            help="What a job's input holds, for the dashboard's JSON request form: a JSON"
            " Schema object, inline or in a file; 'null' removes it (docs/scaling.md).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _wire(options: dict[str, Any]) -> dict[str, Any]:
    """The settings given on the command line, by their wire names."""
    import shlex

    names = {
        "handler": "handler",
        "workers_min": "workersMin",
        "workers_max": "workersMax",
        "workers_spare": "workersSpare",
        "idle_timeout": "idleTimeout",
        "scaler_type": "scalerType",
        "scaler_value": "scalerValue",
        "concurrency": "concurrency",
        "execution_timeout": "executionTimeout",
    }
    body = {wire: options[name] for name, wire in names.items() if options[name] is not None}
    if options["command_line"] is not None:
        body["command"] = shlex.split(options["command_line"])
    if options["env_items"]:
        pairs = [item.partition("=") for item in options["env_items"]]
        if any(not sep for _, sep, _ in pairs):
            raise click.BadParameter("use NAME=VALUE", param_hint="--env")
        body["env"] = {name: value for name, _, value in pairs}
    if options["input_schema"] is not None:
        body["inputSchema"] = _input_schema(options["input_schema"])
    return body


def _input_schema(given: str) -> Any:
    """--input-schema: JSON text when it looks like JSON (`{...}` or `null`), else a file's
    path. The server checks the schema itself."""
    text = given
    if not given.lstrip().startswith("{") and given.strip() != "null":
        try:
            text = Path(given).read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"neither JSON nor a readable file: {exc}", param_hint="--input-schema"
            ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--input-schema") from None


def _call(
    method: str,
    path: str,
    connect: tuple[str | None, str | None, Path | None],
    body: Any = None,
) -> Any:
    """One request to the server that `connect` (--url, --key, --data-dir) resolves to."""
    url, key, data_dir = connect
    env = _environ(data_dir)
    server = _server(url, env)
    headers = {"Authorization": f"Bearer {_client_key(key, server, env)}"}
    try:
        reply = httpx.request(method, f"{server}{path}", json=body, headers=headers, timeout=30.0)
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach {server}: {exc}") from None
    if reply.status_code >= 400:
        try:
            message = reply.json().get("error", reply.text)
        except ValueError:
            message = reply.text
        raise click.ClickException(f"{reply.status_code}: {message}")
    return reply.json()


def _echo(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@endpoint.command("create")
@click.argument("name")
@_settings_options
@_URL
@_KEY
@_DATA_DIR
def create(
    name: str, url: str | None, key: str | None, data_dir: Path | None, **options: Any
) -> None:
    """Create NAME, or replace all its settings (unnamed ones take their defaults).

    \b
    Examples:
      neuroq endpoint create demo --handler my_handler.py:handler --workers-max 4
      neuroq endpoint create sdk --command 'python rp_handler.py' --env MODEL=/models/a
      neuroq endpoint create neuroq --handler neuroq.handler:handler --workers-spare 1 \\
          --scaler-type REQUEST_COUNT --scaler-value 8 --url http://gpu-host:8000
      neuroq endpoint create neuroq --handler neuroq.handler:handler \\
          --input-schema neuroq/handler/input_schema.json
    """
    _echo(_call("PUT", f"/endpoints/{name}", (url, key, data_dir), _wire(options)))


@endpoint.command("update")
@click.argument("name")
@_settings_options
@_URL
@_KEY
@_DATA_DIR
def update(
    name: str, url: str | None, key: str | None, data_dir: Path | None, **options: Any
) -> None:
    """Change the given settings of NAME, keeping the others.

    \b
    Examples:
      neuroq endpoint update demo --workers-max 8
      neuroq endpoint update demo --workers-min 1 --idle-timeout 60
      neuroq endpoint update demo --input-schema '{"properties": {"n": {"type": "integer"}}}'
    """
    _echo(_call("PATCH", f"/endpoints/{name}", (url, key, data_dir), _wire(options)))


@endpoint.command("list")
@_URL
@_KEY
@_DATA_DIR
def list_(url: str | None, key: str | None, data_dir: Path | None) -> None:
    """Print every configured endpoint's settings as JSON.

    \b
    Examples:
      neuroq endpoint list
      neuroq endpoint list --url https://queue.example | jq '.[].name'
    """
    _echo(_call("GET", "/endpoints", (url, key, data_dir))["endpoints"])


@endpoint.command("delete")
@click.argument("name")
@_URL
@_KEY
@_DATA_DIR
def delete(name: str, url: str | None, key: str | None, data_dir: Path | None) -> None:
    """Forget NAME's settings: its workers are drained and it is a plain queue again.

    \b
    Examples:
      neuroq endpoint delete demo
    """
    _echo(_call("DELETE", f"/endpoints/{name}", (url, key, data_dir)))
