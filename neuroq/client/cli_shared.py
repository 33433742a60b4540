"""What `neuroq send` and `neuroq jobs` share: the connection options (worded once, in
`neuroq.client.connection`), exit codes, opening an endpoint, and following a job to its end.

Exit codes: 0 the job COMPLETED (or the command did what it was asked); 1 the job FAILED, was
CANCELLED, TIMED_OUT or did not end within --timeout; 2 bad usage (unreadable input, bad
settings) or a server that could not be reached or refused the request. Results go to stdout,
status lines, warnings and errors to stderr, so `... | jq` sees only the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from neuroq.client import connection
from neuroq.errors import ClientError

if TYPE_CHECKING:
    from neuroq.client.sync import Endpoint, Job

EXIT_COMPLETED = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2
DEFAULT_TIMEOUT_S = 600.0
#: the status hold of `follow` when stderr is not a terminal (see there)
NON_TTY_HOLD_MS = 5_000

F = TypeVar("F", bound=Callable[..., Any])


class Fatal(click.ClickException):
    """A usage or transport problem: printed as `Error: ...`, exit code 2."""

    exit_code = EXIT_USAGE


def connection_options(command: F) -> F:
    """--url, --endpoint and --key, with the same meaning and help in every client command."""
    command = click.option("--key", metavar="KEY", help=connection.CLIENT_KEY_HELP)(command)
    command = click.option("--endpoint", metavar="ID", help=connection.ENDPOINT_HELP)(command)
    command = click.option("--url", metavar="URL", help=connection.URL_HELP)(command)
    return command


def timeout_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--timeout",
        "timeout_s",
        type=click.FloatRange(min=0),
        default=DEFAULT_TIMEOUT_S,
        show_default=True,
        help=help,
    )


class _WarningLine(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"Warning: {record.getMessage()}", err=True)


def show_client_warnings() -> None:
    """Print the client library's warnings (a submit to an endpoint no worker has served) on
    stderr as `Warning: ...`, once each."""
    logger = logging.getLogger("neuroq.client")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
        logger.propagate = False


@contextlib.contextmanager
def client_errors() -> Iterator[None]:
    """Turn the client's errors (settings, transport, refusals) into exit code 2."""
    try:
        yield
    except ClientError as exc:
        raise Fatal(str(exc)) from None


def open_endpoint(
    url: str | None, endpoint: str | None, key: str | None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> Endpoint:
    """An Endpoint resolved in the library's order (`neuroq.client.connection`)."""
    from neuroq.client.sync import Endpoint

    show_client_warnings()
    with client_errors():
        return Endpoint(endpoint, api_key=key, base_url=url, timeout_s=timeout_s)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def follow(job: Job, timeout_s: float, started: float) -> dict[str, Any]:
    """Wait for the job's end, showing its state and progress on stderr (a live line on a
    terminal); the terminal status object. JobTimeout when `timeout_s` runs out."""
    from neuroq.client.progress import JobDisplay

    tty = sys.stderr.isatty()
    display = JobDisplay(job.id, started, sys.stderr, tty)
    try:
        # On a terminal, short holds keep the elapsed time ticking about once a second. Off
        # one, a job's start (IN_QUEUE -> IN_PROGRESS) does not end a hold on the server, only
        # its end or a progress update does, so the plain "IN_PROGRESS" line comes at the end
        # of the hold in which the job started: 5 s holds show it at most 5 s late, for one
        # short poll per 5 s of a job that reports no progress.
        hold_ms = 1000 if tty else NON_TTY_HOLD_MS
        display.update(job.last_status or {})
        return job.wait(timeout_s, on_status=display.update, long_poll_ms=hold_ms)
    finally:
        display.finish()


def job_failed(status: dict[str, Any]) -> int:
    """Report a job that ended other than COMPLETED on stderr; the exit code."""
    from neuroq.client._core import error_text

    click.echo(f"job {status.get('id')} {status.get('status')}: {error_text(status)}", err=True)
    return EXIT_JOB_FAILED
