"""`neuroq send`: submit one job and wait for its result.

Exit codes: 0 the job COMPLETED; 1 it FAILED, was CANCELLED, TIMED_OUT or did not finish within
--timeout; 2 bad usage (unreadable input, missing settings) or a server that could not be reached
or refused the request. The output goes to stdout as JSON; status and errors go to stderr, so
`neuroq send ... | jq` sees only the result.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from neuroq.client._core import DEFAULT_BASE_URL
from neuroq.config import DEFAULT_ENDPOINT
from neuroq.errors import ClientError, JobTimeout

EXIT_COMPLETED = 0
EXIT_JOB_FAILED = 1
EXIT_USAGE = 2


class _Fatal(click.ClickException):
    """A usage or transport problem: printed as `Error: ...`, exit code 2."""

    exit_code = EXIT_USAGE


def read_input(argument: str) -> Any:
    """The job input from INPUT: a JSON literal, `@path/to/file.json`, or `-` for stdin."""
    if argument == "-":
        text, source = sys.stdin.read(), "standard input"
    elif argument.startswith("@"):
        path = argument[1:]
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path!r}: {exc.strerror}", param_hint="INPUT"
            ) from None
        source = path
    else:
        text, source = argument, "the INPUT argument"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"at line {exc.lineno} column {exc.colno}"
        shell = " (quote the whole JSON in single quotes)" if source == "the INPUT argument" else ""
        raise click.BadParameter(
            f"{source} is not valid JSON: {exc.msg} {where}{shell}", param_hint="INPUT"
        ) from None


class StatusLine:
    """One live line on a terminal (rewritten in place), plain lines on change otherwise."""

    def __init__(self, job_id: str, started: float, tty: bool) -> None:
        self.job_id = job_id
        self.started = started
        self.tty = tty
        self.last_state: str | None = None

    def update(self, status: dict[str, Any]) -> None:
        state = str(status.get("status", "?"))
        elapsed = time.monotonic() - self.started
        if self.tty:
            click.echo(
                f"\r\x1b[K{state:<11} {elapsed:6.1f} s  job {self.job_id}", nl=False, err=True
            )
        elif state != self.last_state:
            click.echo(f"job {self.job_id}: {state} after {elapsed:.1f} s", err=True)
        self.last_state = state

    def finish(self) -> None:
        if self.tty and self.last_state is not None:
            click.echo("", err=True)


class ChunkPrinter:
    """Prints stream chunks as they come: strings raw (token pieces join up), others as JSON
    lines; a newline separates a run of raw text from what follows."""

    def __init__(self) -> None:
        self.open_line = False

    def print(self, chunk: Any) -> None:
        if isinstance(chunk, str):
            click.echo(chunk, nl=False)
            self.open_line = not chunk.endswith("\n")
        else:
            if self.open_line:
                click.echo("")
            click.echo(json.dumps(chunk, ensure_ascii=False))
            self.open_line = False
        sys.stdout.flush()

    def finish(self) -> None:
        if self.open_line:
            click.echo("")


@click.command()
@click.argument("input_arg", metavar="INPUT")
@click.option("--endpoint", help="Endpoint id.  [default: $RUNPOD_ENDPOINT_ID or neuroq]")
@click.option("--url", help="Base URL.  [default: $NEUROQ_API_URL or http://127.0.0.1:8000/v2]")
@click.option(
    "--key",
    help="API key.  [default: $RUNPOD_API_KEY, or for a server on this machine the key it "
    "generated into $NEUROQ_DATA_DIR/api_key (.neuroq/api_key)]",
)
@click.option("--stream", "stream", is_flag=True, help="Print stream chunks as they arrive.")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="Seconds to wait for the job to end.",
)
@click.option("--async-submit", is_flag=True, help="Only submit; print the job id and exit.")
def send(
    input_arg: str,
    endpoint: str | None,
    url: str | None,
    key: str | None,
    stream: bool,
    timeout_s: float,
    async_submit: bool,
) -> None:
    """Submit INPUT as a job's input and print its output as JSON.

    INPUT is JSON (wrapped as {"input": INPUT}), @FILE.json, or - for standard input.
    Exit code: 0 COMPLETED, 1 FAILED/CANCELLED/TIMED_OUT or --timeout reached, 2 usage or
    connection error."""
    from neuroq.client.sync import Endpoint

    job_input = read_input(input_arg)
    endpoint = endpoint or os.environ.get("RUNPOD_ENDPOINT_ID") or DEFAULT_ENDPOINT
    url = url or os.environ.get("NEUROQ_API_URL") or None
    key = key or os.environ.get("RUNPOD_API_KEY") or local_server_key(url)
    try:
        with Endpoint(endpoint, api_key=key, base_url=url, timeout_s=timeout_s) as ep:
            code = _send(ep, job_input, stream=stream, timeout_s=timeout_s, just_id=async_submit)
    except ClientError as exc:
        raise _Fatal(str(exc)) from None
    sys.exit(code)


def local_server_key(url: str | None) -> str | None:
    """The client key a local `neuroq serve` generated into its data dir, so `neuroq serve` then
    `neuroq send ...` works with no configuration. Only for a server on this machine: the file's
    key is never sent anywhere else."""
    host = urlsplit(url or DEFAULT_BASE_URL).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    path = Path(os.environ.get("NEUROQ_DATA_DIR") or ".neuroq") / "api_key"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _send(ep: Any, job_input: Any, *, stream: bool, timeout_s: float, just_id: bool) -> int:
    started = time.monotonic()
    job = ep.run(job_input)
    if just_id:
        click.echo(job.id)
        return EXIT_COMPLETED
    tty = sys.stderr.isatty()
    try:
        if stream:
            printer = ChunkPrinter()
            try:
                for chunk in job.stream(timeout_s):
                    printer.print(chunk)
            finally:
                printer.finish()
            status = job.status_object()
        else:
            line = StatusLine(job.id, started, tty)
            try:
                # On a terminal, short holds keep the elapsed time ticking about once a second.
                hold_ms = 1000 if tty else 30_000
                line.update(job.last_status or {})
                status = job.wait(timeout_s, on_status=line.update, long_poll_ms=hold_ms)
            finally:
                line.finish()
    except JobTimeout as exc:
        click.echo(f"Error: {exc}", err=True)
        return EXIT_JOB_FAILED
    return _report(status, printed_stream=stream)


def _report(status: dict[str, Any], *, printed_stream: bool) -> int:
    from neuroq.client._core import error_text

    if status.get("status") == "COMPLETED":
        if not printed_stream:
            click.echo(json.dumps(status.get("output"), ensure_ascii=False))
        return EXIT_COMPLETED
    click.echo(f"job {status.get('id')} {status.get('status')}: {error_text(status)}", err=True)
    return EXIT_JOB_FAILED
