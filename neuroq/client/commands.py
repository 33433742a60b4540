"""`neuroq send`: submit one job and wait for its result.

The output goes to stdout as JSON; status, progress, warnings and errors go to stderr, so
`neuroq send ... | jq` sees only the result. Exit codes are those of `cli_shared`.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from neuroq.client import cli_shared
from neuroq.client.cli_shared import EXIT_COMPLETED, EXIT_JOB_FAILED
from neuroq.errors import JobTimeout


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


#: the keys of a RunPod request body besides `input`
REQUEST_KEYS = frozenset({"webhook", "policy", "s3Config"})


def split_request(value: Any) -> tuple[Any, dict[str, Any]]:
    """A RunPod-style request body (`{"input": ..., "policy": ...?, "webhook": ...?}`, as saved
    from curl or the RunPod console) is sent as that request, not wrapped in another `input`:
    returns (input, the body's other keys). Anything else is the input itself."""
    if isinstance(value, dict) and "input" in value and set(value) - {"input"} <= REQUEST_KEYS:
        extra = {k: v for k, v in value.items() if k != "input"}
        return value["input"], extra
    return value, {}


class ChunkPrinter:
    """Prints stream chunks as they come: strings raw (token pieces join up), others as JSON
    lines; a newline separates a run of raw text from what follows."""

    def __init__(self) -> None:
        self.open_line = False
        self.chunks: list[Any] = []

    def print(self, chunk: Any) -> None:
        self.chunks.append(chunk)
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

    def repeats(self, output: Any) -> bool:
        """Whether a final output only repeats what was streamed: nothing (a generator's
        output without aggregation) or every chunk again (with it)."""
        return bool(self.chunks) and output in (None, [], "", self.chunks)


@click.command()
@click.argument("input_arg", metavar="INPUT")
@cli_shared.connection_options
@click.option(
    "--stream",
    is_flag=True,
    help="Print stream chunks as they arrive, then the final output unless the chunks were it.",
)
@cli_shared.timeout_option("Seconds to wait for the job to end; it keeps running after.")
@click.option(
    "--async-submit",
    is_flag=True,
    help="Only submit: print the job id, and on stderr how to follow the job.",
)
def send(
    input_arg: str,
    url: str | None,
    endpoint: str | None,
    key: str | None,
    stream: bool,
    timeout_s: float,
    async_submit: bool,
) -> None:
    """Submit INPUT as a job's input and print its output as JSON.

    INPUT is JSON (sent as {"input": INPUT}), @FILE.json, or - for standard input; a RunPod request
    body ({"input": ..., "policy": ...}) is sent as that request. While the job
    runs, its state and progress show on stderr (a live bar on a terminal). Exit code: 0
    COMPLETED, 1 FAILED/CANCELLED/TIMED_OUT or --timeout reached, 2 usage or connection error.

    \b
    Examples:
      neuroq send '{"action": "health"}'
      neuroq send @train.json --endpoint neuroq --timeout 3600
      echo '{"prompt": "hi"}' | neuroq send - --stream
      neuroq send '{"action": "train", "model": "mine"}' --async-submit
    """
    job_input, request = split_request(read_input(input_arg))
    if "s3Config" in request:
        raise click.BadParameter("s3Config is not supported by neuroq send", param_hint="INPUT")
    started = time.monotonic()
    with cli_shared.open_endpoint(url, endpoint, key, timeout_s) as ep, cli_shared.client_errors():
        job = ep.run(job_input, webhook=request.get("webhook"), policy=request.get("policy"))
        if async_submit:
            click.echo(job.id)
            hint = f"neuroq jobs status {job.id} --wait --endpoint {ep.endpoint_id}"
            if url:
                hint += f" --url {url}"
            click.echo(f"follow it: {hint}", err=True)
            return
        try:
            if stream:
                status, shown = _stream(job, timeout_s)
            else:
                status, shown = cli_shared.follow(job, timeout_s, started), False
        except JobTimeout as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_JOB_FAILED)
    sys.exit(_report(status, output_shown=shown))


def _stream(job: Any, timeout_s: float) -> tuple[dict[str, Any], bool]:
    """Print the job's chunks as they come; the final status object, and whether the chunks
    already showed its output (a job that streams nothing still gets its result printed)."""
    printer = ChunkPrinter()
    try:
        for chunk in job.stream(timeout_s):
            printer.print(chunk)
    finally:
        printer.finish()
    status: dict[str, Any] = job.status_object()
    return status, printer.repeats(status.get("output"))


def _report(status: dict[str, Any], *, output_shown: bool) -> int:
    if status.get("status") != "COMPLETED":
        return cli_shared.job_failed(status)
    if not output_shown:
        cli_shared.print_json(status.get("output"))
    return EXIT_COMPLETED
