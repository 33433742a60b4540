"""`neuroq jobs`: look at and act on jobs from the terminal (list, status, logs, cancel, retry,
purge).

Each subcommand is one client call; `list` reads our `GET /v2/jobs` route, the others RunPod's
per-job routes, so all but `list` work against hosted RunPod too. Results go to stdout (JSON,
or a table for `list`), and exit codes are those of `cli_shared`.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click

from neuroq.client import cli_shared
from neuroq.client.cli_shared import EXIT_COMPLETED, EXIT_JOB_FAILED
from neuroq.errors import JobTimeout
from neuroq.jobs import TERMINAL, JobStatus

_STATES = click.Choice([s.value for s in JobStatus], case_sensitive=False)


@click.group()
def jobs() -> None:
    """List jobs, follow one, cancel, retry, or purge a queue.

    \b
    Examples:
      neuroq jobs list --status FAILED
      neuroq jobs status JOB_ID --wait
      neuroq jobs logs JOB_ID --follow
      neuroq jobs cancel JOB_ID --endpoint demo
    """


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value / 1000:.1f}s"


def _when(ms: Any) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows: list[dict[str, Any]], every_endpoint: bool) -> list[str]:
    head = ["ID", "STATUS", "CREATED (UTC)", "DELAY", "RUN", "WORKER", "ERROR"]
    if every_endpoint:
        head.insert(1, "ENDPOINT")
    lines = [head]
    for row in rows:
        cells = [
            row["id"],
            row["status"],
            _when(row.get("createdAt")),
            _ms(row.get("delayTime")),
            _ms(row.get("executionTime")),
            row.get("workerId") or "-",
            (row.get("error") or "").splitlines()[0][:60] if row.get("error") else "",
        ]
        if every_endpoint:
            cells.insert(1, row["endpointId"])
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]


@jobs.command("list")
@cli_shared.connection_options
@click.option("--all", "every_endpoint", is_flag=True, help="Jobs of every endpoint.")
@click.option(
    "--status", type=_STATES, default=None, help="Only jobs in this state.  [default: any]"
)
@click.option(
    "--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="Jobs per page."
)
@click.option(
    "--offset",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Jobs to skip, newest first (the previous page's next offset).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the page as JSON instead of a table.")
def list_jobs(
    url: str | None,
    endpoint: str | None,
    key: str | None,
    every_endpoint: bool,
    status: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List retained jobs, newest first (finished ones are kept 30 min after /run).

    \b
    Examples:
      neuroq jobs list
      neuroq jobs list --all --status IN_QUEUE
      neuroq jobs list --endpoint demo --limit 50 --offset 50 --json
    """
    with cli_shared.open_endpoint(url, endpoint, key) as ep, cli_shared.client_errors():
        page = ep.list_jobs(
            status.upper() if status else None,
            limit=limit,
            offset=offset,
            every_endpoint=every_endpoint,
        )
    if as_json:
        cli_shared.print_json(page)
        return
    rows = page.get("jobs", [])
    if rows:
        for line in _table(rows, every_endpoint):
            click.echo(line)
    else:
        where = "any endpoint" if every_endpoint else f"endpoint {ep.endpoint_id}"
        click.echo(f"no retained jobs on {where}", err=True)
    if page.get("nextOffset") is not None:
        click.echo(f"more: add --offset {page['nextOffset']}", err=True)


@jobs.command()
@click.argument("job_id")
@cli_shared.connection_options
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the job to its end (state and progress on stderr); exit 0 only if COMPLETED.",
)
@cli_shared.timeout_option("With --wait: seconds to follow the job; it keeps running after.")
def status(
    job_id: str,
    url: str | None,
    endpoint: str | None,
    key: str | None,
    wait: bool,
    timeout_s: float,
) -> None:
    """Print JOB_ID's status object as JSON (output or progress included).

    \b
    Examples:
      neuroq jobs status 8c1f...-e1
      neuroq jobs status 8c1f...-e1 --wait --endpoint demo
    """
    started = time.monotonic()
    with cli_shared.open_endpoint(url, endpoint, key, timeout_s) as ep, cli_shared.client_errors():
        job = ep.job(job_id)
        if not wait:
            cli_shared.print_json(job.status_object())
            return
        try:
            final = cli_shared.follow(job, timeout_s, started)
        except JobTimeout as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_JOB_FAILED)
    cli_shared.print_json(final)
    sys.exit(EXIT_COMPLETED if final.get("status") == "COMPLETED" else EXIT_JOB_FAILED)


@jobs.command()
@click.argument("job_id")
@cli_shared.connection_options
@click.option("--follow", is_flag=True, help="Keep printing new lines until the job has ended.")
def logs(job_id: str, url: str | None, endpoint: str | None, key: str | None, follow: bool) -> None:
    """Print what JOB_ID's handler logged, and a failure's traceback (our server only).

    \b
    Examples:
      neuroq jobs logs 8c1f...-e1
      neuroq jobs logs 8c1f...-e1 --follow
    """
    after = 0
    with cli_shared.open_endpoint(url, endpoint, key) as ep, cli_shared.client_errors():
        while True:
            page: dict[str, Any] = ep.send(ep.routes.logs(job_id, after=after, limit=LOG_PAGE))
            lines = page.get("lines", [])
            for item in lines:
                click.echo(_log_line(item))
            after = page.get("nextAfter", after)
            if len(lines) == LOG_PAGE:
                continue  # more is waiting
            # one read after the end, for lines posted just after the result
            if not follow or (page.get("status") in _ENDED and not lines):
                break
            time.sleep(1.0)
    if page.get("truncated"):
        click.echo("(some lines were dropped at the per-job cap)", err=True)


LOG_PAGE = 1_000
_ENDED = {s.value for s in TERMINAL}


def _log_line(item: dict[str, Any]) -> str:
    at = datetime.fromtimestamp(item.get("at", 0) / 1000, UTC).strftime("%H:%M:%S.%f")[:-3]
    attempt = f" [attempt {item['attempt']}]" if item.get("attempt") else ""
    return f"{at} {item.get('level', '')}{attempt} {item.get('line', '')}"


@jobs.command()
@click.argument("job_id")
@cli_shared.connection_options
def cancel(job_id: str, url: str | None, endpoint: str | None, key: str | None) -> None:
    """Cancel JOB_ID (a finished job stays as it is); print its status object.

    \b
    Example:
      neuroq jobs cancel 8c1f...-e1
    """
    with cli_shared.open_endpoint(url, endpoint, key) as ep, cli_shared.client_errors():
        cli_shared.print_json(ep.job(job_id).cancel())


@jobs.command()
@click.argument("job_id")
@cli_shared.connection_options
def retry(job_id: str, url: str | None, endpoint: str | None, key: str | None) -> None:
    """Queue a FAILED or TIMED_OUT JOB_ID again, same id; print its status object.

    \b
    Example:
      neuroq jobs retry 8c1f...-e1 && neuroq jobs status 8c1f...-e1 --wait
    """
    with cli_shared.open_endpoint(url, endpoint, key) as ep, cli_shared.client_errors():
        cli_shared.print_json(ep.job(job_id).retry())


@jobs.command()
@cli_shared.connection_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def purge(url: str | None, endpoint: str | None, key: str | None, yes: bool) -> None:
    """Cancel every queued job of the endpoint (running jobs go on); print how many.

    \b
    Example:
      neuroq jobs purge --endpoint demo --yes
    """
    with cli_shared.open_endpoint(url, endpoint, key) as ep, cli_shared.client_errors():
        if not yes:
            click.confirm(f"cancel every queued job of endpoint {ep.endpoint_id}?", abort=True)
        cli_shared.print_json(ep.purge_queue())
