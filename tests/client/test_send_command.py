"""`neuroq send` as a user runs it: a subprocess against a real server and worker. Checks what
lands on stdout, on stderr, and the exit code (0 COMPLETED, 1 job failed, 2 usage/transport)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from harness import start_server, start_worker

from neuroq.client.commands import local_server_key
from neuroq.client.commands import send as send_command

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cli_server(shared_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    log_dir = tmp_path_factory.mktemp("workers")
    procs = [
        start_worker(shared_server, f"neuroq.demo_handlers:{name}", f"cli-{name}", log_dir)
        for name in ("echo", "fail", "stream_sync")
    ]
    yield shared_server
    for proc in procs:
        proc.stop()


def send(server: Any, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update({"NEUROQ_API_URL": server.base_url, "RUNPOD_API_KEY": server.api_key})
    env.pop("RUNPOD_ENDPOINT_ID", None)
    return subprocess.run(
        [sys.executable, "-m", "neuroq", "send", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


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
        env = dict(os.environ)
        for name in ("RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID", "NEUROQ_DATA_DIR"):
            env.pop(name, None)
        env["NEUROQ_API_URL"] = f"http://localhost:{server.port}"
        done = subprocess.run(
            [sys.executable, "-m", "neuroq", "send", '{"action": "health"}'],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"action": "health"}
    finally:
        server.stop()


def test_the_local_key_file_is_offered_only_to_this_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".neuroq").mkdir()
    (tmp_path / ".neuroq" / "api_key").write_text("local-key\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEUROQ_DATA_DIR", raising=False)
    assert local_server_key(None) == "local-key"
    assert local_server_key("http://localhost:8000/v2") == "local-key"
    assert local_server_key("https://api.runpod.ai/v2") is None
    assert local_server_key("http://10.0.0.5:8000/v2") is None
    monkeypatch.setenv("NEUROQ_DATA_DIR", str(tmp_path / "elsewhere"))
    assert local_server_key(None) is None
