"""`neuroq scaler` (the scaler against a remote server) and `neuroq endpoint ...` (endpoint
settings through the server's `/endpoints` routes). Both only parse and call."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import click
import httpx

_URL = click.option(
    "--url",
    default=lambda: os.environ.get("NEUROQ_URL", "http://127.0.0.1:8000"),
    show_default="$NEUROQ_URL or http://127.0.0.1:8000",
    help="Server address, http://HOST:PORT.",
)
_KEY = click.option(
    "--key",
    envvar="NEUROQ_API_KEY",
    show_envvar=True,
    help="Client key; default: the data directory's generated one.",
)
_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where generated keys (and the scaler's pidfiles) live [NEUROQ_DATA_DIR, .neuroq].",
)


def _client_key(key: str | None, data_dir: Path | None) -> str:
    if key:
        return key
    from neuroq.api.auth import load_keys
    from neuroq.config import Settings

    return load_keys(Settings.from_env(data_dir=data_dir)).client[0]


@click.command()
@_URL
@_KEY
@click.option(
    "--worker-key",
    envvar="NEUROQ_WORKER_KEY",
    show_envvar=True,
    help="Worker key the started workers use; default: the data directory's generated one.",
)
@_DATA_DIR
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
    url: str,
    key: str | None,
    worker_key: str | None,
    data_dir: Path | None,
    interval_s: float,
    grace_s: float,
    ping_interval_s: float,
) -> None:
    """Start and stop workers for a server's configured endpoints, on this machine."""
    from neuroq.api.auth import load_keys
    from neuroq.config import Settings
    from neuroq.logs import configure_logging
    from neuroq.scaler.scaler import Scaler, ScalerBusy
    from neuroq.scaler.source import HTTPSource

    settings = Settings.from_env(data_dir=data_dir)
    client_key = _client_key(key, data_dir)
    worker_key = worker_key or load_keys(settings).worker[0]
    configure_logging(settings, secrets=[client_key, worker_key])
    source = HTTPSource(url, client_key, worker_key)
    runner = Scaler(
        source,
        url,
        worker_key,
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
    """Configure endpoints: workers, scaling rule, default executionTimeout."""


def _settings_options(fn: Any) -> Any:
    options = [
        click.option("--handler", help="MODULE:FUNCTION or FILE.py:FUNCTION for neuroq worker."),
        click.option(
            "--command",
            "command_line",
            help="An external worker command (e.g. 'python rp_handler.py'), split like a shell.",
        ),
        click.option("--workers-min", type=int, help="Workers kept warm [0]."),
        click.option("--workers-max", type=int, help="Most workers at once [3]."),
        click.option(
            "--workers-spare",
            type=int,
            help="Idle workers kept started beyond the busy ones, within --workers-max [0].",
        ),
        click.option("--idle-timeout", type=int, help="Seconds idle before a worker stops [5]."),
        click.option(
            "--scaler-type",
            type=click.Choice(["QUEUE_DELAY", "REQUEST_COUNT"]),
            help="Scaling rule [QUEUE_DELAY].",
        ),
        click.option("--scaler-value", type=int, help="Seconds of delay, or jobs per worker [4]."),
        click.option("--concurrency", type=int, help="Jobs one worker runs at once [1]."),
        click.option("--execution-timeout", type=int, help="Default executionTimeout, in ms."),
        click.option("--env", "env_items", multiple=True, metavar="NAME=VALUE"),
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
    return body


def _call(method: str, url: str, key: str, path: str, body: Any = None) -> Any:
    try:
        reply = httpx.request(
            method,
            f"{url.rstrip('/')}{path}",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=30.0,
        )
    except httpx.TransportError as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None
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
def create(name: str, url: str, key: str | None, data_dir: Path | None, **options: Any) -> None:
    """Create NAME, or replace all its settings (unnamed ones take their defaults)."""
    _echo(_call("PUT", url, _client_key(key, data_dir), f"/endpoints/{name}", _wire(options)))


@endpoint.command("update")
@click.argument("name")
@_settings_options
@_URL
@_KEY
@_DATA_DIR
def update(name: str, url: str, key: str | None, data_dir: Path | None, **options: Any) -> None:
    """Change the given settings of NAME, keeping the others."""
    _echo(_call("PATCH", url, _client_key(key, data_dir), f"/endpoints/{name}", _wire(options)))


@endpoint.command("list")
@_URL
@_KEY
@_DATA_DIR
def list_(url: str, key: str | None, data_dir: Path | None) -> None:
    """Print every configured endpoint's settings."""
    _echo(_call("GET", url, _client_key(key, data_dir), "/endpoints")["endpoints"])


@endpoint.command("delete")
@click.argument("name")
@_URL
@_KEY
@_DATA_DIR
def delete(name: str, url: str, key: str | None, data_dir: Path | None) -> None:
    """Forget NAME's settings: its workers are drained and it is a plain queue again."""
    _echo(_call("DELETE", url, _client_key(key, data_dir), f"/endpoints/{name}"))
