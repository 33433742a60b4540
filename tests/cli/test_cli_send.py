"""`neuroq send` as a user runs it: a subprocess against a real server and worker. Checks what
lands on stdout, on stderr, and the exit code (0 COMPLETED, 1 job failed, 2 usage/transport):
results, chunks, progress, the misspelt-endpoint warning and the hint after --async-submit."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_support import neuroq, on_terminal
from click.testing import CliRunner
from harness import start_server, start_worker

from neuroq.client.commands import send as send_command

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cli_server(shared_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log_dir = tmp_path_factory.mktemp("workers")
    procs = [
        start_worker(shared_server, f"neuroq.demo_handlers:{name}", f"cli-{name}", log_dir)
        for name in ("echo", "fail", "stream_sync", "progress")
    ]
    yield shared_server
    for proc in procs:
        proc.stop()


def send(server: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return neuroq("send", *args, server=server, stdin=stdin)


def test_completed_job_prints_output_json_and_exits_0(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-echo", '{"action": "health", "n": [1, 2]}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"action": "health", "n": [1, 2]}
    # Not a terminal: plain status lines on stderr, none on stdout.
    assert "COMPLETED" in done.stderr


def test_failed_job_exits_1_with_the_error(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-fail", '{"message": "kaput"}')
    assert done.returncode == 1
    assert done.stdout == ""
    assert "FAILED" in done.stderr and "kaput" in done.stderr


def test_timeout_exits_1(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-nobody", "--timeout", "0.5", "1")
    assert done.returncode == 1
    assert "not finished after 0.5 s" in done.stderr


def test_input_from_file_and_stdin(cli_server: Any, tmp_path: Path) -> None:
    # In-process (click's runner) against the real server: only the input source differs.
    env = {"NEUROQ_API_URL": cli_server.base_url, "RUNPOD_API_KEY": cli_server.api_key}
    path = tmp_path / "in.json"
    path.write_text('{"from": "file"}', encoding="utf-8")
    done = CliRunner().invoke(send_command, ["--endpoint", "cli-echo", f"@{path}"], env=env)
    assert done.exit_code == 0 and json.loads(done.stdout) == {"from": "file"}
    done = CliRunner().invoke(
        send_command, ["--endpoint", "cli-echo", "-"], input='["stdin"]', env=env
    )
    assert done.exit_code == 0 and json.loads(done.stdout) == ["stdin"]


def test_a_runpod_request_body_from_a_file_is_sent_as_that_request(
    cli_server: Any, tmp_path: Path
) -> None:
    """A body saved from curl or the RunPod console is not wrapped in a second `input`."""
    path = tmp_path / "request.json"
    body = {"input": {"from": "request"}, "policy": {"executionTimeout": 60_000}}
    path.write_text(json.dumps(body), encoding="utf-8")
    done = send(cli_server, "--endpoint", "cli-echo", f"@{path}")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"from": "request"}
    # an object that merely has an `input` key among others is an input like any other
    done = send(cli_server, "--endpoint", "cli-echo", '{"input": 1, "other": 2}')
    assert json.loads(done.stdout) == {"input": 1, "other": 2}


def test_stream_prints_text_chunks_as_they_come(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-stream_sync", "--stream", '{"text": "a b c"}')
    assert done.returncode == 0, done.stderr
    assert done.stdout == "abc\n"


def test_async_submit_prints_only_the_id(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-nobody", "--async-submit", "1")
    assert done.returncode == 0
    assert done.stdout.strip().endswith("-u1") and len(done.stdout.split()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--endpoint", "e", '{"a": 1,}'], "not valid JSON"),
        (["--endpoint", "e", "@/no/such/file.json"], "cannot read"),
        (["--endpoint", "a/b", "1"], "one URL path segment"),
        (["--endpoint", "e", "--url", "localhost:8000", "1"], "base URL"),
    ],
)
def test_usage_errors_exit_2_before_any_request(args: list[str], message: str) -> None:
    env = {"RUNPOD_ENDPOINT_ID": None, "NEUROQ_API_URL": "http://127.0.0.1:9/v2"}
    done = CliRunner().invoke(send_command, args, env=env)
    assert done.exit_code == 2, done.output
    assert message in done.stderr
    assert done.exception is None or isinstance(done.exception, SystemExit)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--endpoint", "cli-echo", "--key", "wrong", "1"], "401"),
        (["--endpoint", "x", "--url", "http://127.0.0.1:9/v2", "1"], "Connect"),
    ],
)
def test_refused_or_unreachable_server_exits_2(
    cli_server: Any, args: list[str], message: str
) -> None:
    done = send(cli_server, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_zero_configuration_against_a_local_server(tmp_path: Path) -> None:
    """`neuroq serve --worker ...` then `neuroq send ...` in the same directory: the default
    endpoint (neuroq) and the client key the server generated into .neuroq/api_key are used."""
    server = start_server(
        tmp_path / ".neuroq", "--worker", "neuroq.demo_handlers:echo", NEUROQ_API_KEYS=""
    )
    try:
        url = f"http://localhost:{server.port}"
        done = neuroq("send", '{"action": "health"}', cwd=tmp_path, NEUROQ_API_URL=url)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"action": "health"}
    finally:
        server.stop()


def test_stream_prints_the_output_of_a_job_that_streams_nothing(cli_server: Any) -> None:
    """Was: `--stream` printed nothing at all for a handler that yields no chunks (health,
    train, any plain handler)."""
    done = send(cli_server, "--endpoint", "cli-echo", "--stream", '{"action": "health"}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"action": "health"}


def test_progress_shows_as_plain_lines_off_a_terminal(cli_server: Any) -> None:
    """Was: only `IN_PROGRESS 10.5 s`, never what the handler reported."""
    done = send(cli_server, "--endpoint", "cli-progress", '{"seconds": 1.2}')
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"done": True}
    assert "IN_PROGRESS" in done.stderr
    assert ": step=1" in done.stderr and ": step=2" in done.stderr


TRAINING_HANDLER = """
import asyncio
from neuroq.worker import progress_update

async def handler(job):
    for step in range(1, 4):
        progress_update(job, {"step": step, "total_steps": 3, "loss": 1.5 / step})
        await asyncio.sleep(0.7)
    return {"trained": True}
"""


def test_progress_is_a_live_bar_on_a_terminal(cli_server: Any, tmp_path: Path) -> None:
    handler = tmp_path / "training.py"
    handler.write_text(TRAINING_HANDLER)
    worker = start_worker(cli_server, f"{handler}:handler", "cli-training", tmp_path)
    env = {"NEUROQ_API_URL": cli_server.base_url, "RUNPOD_API_KEY": cli_server.api_key}
    try:
        code, stdout, drawn = on_terminal("send", "--endpoint", "cli-training", "{}", **env)
    finally:
        worker.stop()
    assert code == 0, drawn
    assert json.loads(stdout) == {"trained": True}
    assert "%|" in drawn and "2/3 loss=0.75" in drawn


def test_a_misspelt_endpoint_is_warned_about_on_stderr(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-ehco", "--async-submit", "1")
    assert done.returncode == 0
    assert len(done.stdout.split()) == 1  # stdout stays the id alone
    assert "Warning: no worker has served endpoint 'cli-ehco'" in done.stderr


def test_no_warning_for_a_served_endpoint(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-echo", "1")
    assert done.returncode == 0
    assert "Warning" not in done.stderr


def test_async_submit_says_how_to_follow_the_job_and_that_command_works(cli_server: Any) -> None:
    done = send(cli_server, "--endpoint", "cli-echo", "--async-submit", '{"n": 7}')
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    hint = done.stderr.split("follow it: ", 1)[1].strip()
    assert hint == f"neuroq jobs status {job_id} --wait --endpoint cli-echo"
    followed = neuroq(*shlex.split(hint)[1:], server=cli_server)
    assert followed.returncode == 0, followed.stderr
    final = json.loads(followed.stdout)
    assert final["status"] == "COMPLETED" and final["output"] == {"n": 7}
