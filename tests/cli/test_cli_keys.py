"""Zero configuration next to a local server, for every entry point: `neuroq serve` generates
its keys into .neuroq/, and `neuroq worker`, `neuroq send` and the library's `send_and_wait`,
run from the same directory, find the server, the endpoint and their keys with nothing set; and
`neuroq worker-env` finds the server and endpoint in the same order as they do."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import pytest
from cli_support import clean_env, neuroq
from harness import end_group, spawn, start_server

pytestmark = pytest.mark.timeout(120)

LIBRARY = """
from neuroq import Endpoint, send_and_wait
print(send_and_wait({"via": "send_and_wait"}, timeout=30))
with Endpoint() as ep:
    print(ep.run({"via": "Endpoint"}).output(timeout=30))
"""


def test_worker_send_and_library_need_no_settings_next_to_a_local_server(tmp_path: Path) -> None:
    """Was: `neuroq worker` ignored .neuroq/worker_key ("a worker key is required"), so the
    README's worker command failed as written; `send_and_wait` and `Endpoint()` raised "no
    endpoint id", then 401, where `neuroq send` worked."""
    server = start_server(tmp_path / ".neuroq", NEUROQ_API_KEYS="", NEUROQ_WORKER_KEYS="")
    # --url means the server in every command; the worker accepts the client's /v2 form too.
    worker_cmd = [sys.executable, "-m", "neuroq", "worker", "neuroq.demo_handlers:echo"]
    worker_cmd += ["--url", f"{server.url}/v2"]
    worker = spawn(worker_cmd, tmp_path / "worker.log", clean_env(), cwd=tmp_path)
    try:
        done = neuroq("send", '{"via": "send"}', "--url", server.url, cwd=tmp_path)
        assert done.returncode == 0, (done.stderr, (tmp_path / "worker.log").read_text())
        assert json.loads(done.stdout) == {"via": "send"}
        lib = neuroq("-c", LIBRARY, cwd=tmp_path, NEUROQ_API_URL=server.url, python=True)
        assert lib.returncode == 0, lib.stderr
        assert lib.stdout.splitlines() == [
            "{'output': {'via': 'send_and_wait'}}",
            "{'via': 'Endpoint'}",
        ]
    finally:
        end_group(worker, grace_s=15.0)
        server.stop()


def test_worker_without_a_key_anywhere_says_where_keys_come_from(tmp_path: Path) -> None:
    done = neuroq("worker", "neuroq.demo_handlers:echo", "--url", "http://10.0.0.5:1", cwd=tmp_path)
    assert done.returncode == 2
    assert "NEUROQ_WORKER_KEY" in done.stderr and ".neuroq/worker_key" in done.stderr


def worker_env(tmp_path: Path, *args: str, **env: str) -> dict[str, str]:
    done = neuroq("worker-env", *args, cwd=tmp_path, NEUROQ_DATA_DIR=str(tmp_path), **env)
    assert done.returncode == 0, done.stderr
    lines = [shlex.split(line.removeprefix("export ")) for line in done.stdout.splitlines()]
    return dict(words[0].split("=", 1) for words in lines)


def test_worker_env_finds_the_server_and_endpoint_as_every_command_does(tmp_path: Path) -> None:
    """Was: `worker-env --url` had a fixed default that no environment variable changed, and
    --endpoint had no default, unlike `neuroq send` and `neuroq worker`."""
    ping = "/ping/$RUNPOD_POD_ID"
    found = worker_env(tmp_path, RUNPOD_ENDPOINT_ID="ep-env", NEUROQ_API_URL="http://h:1/v2")
    assert found["RUNPOD_WEBHOOK_PING"] == "http://h:1/v2/ep-env" + ping
    assert worker_env(tmp_path, NEUROQ_URL="http://h:2")["RUNPOD_WEBHOOK_PING"] == (
        "http://h:2/v2/neuroq" + ping
    )
    given = worker_env(
        tmp_path, "--url", "http://h:3", "--endpoint", "ep", NEUROQ_API_URL="http://h:1"
    )
    assert given["RUNPOD_WEBHOOK_PING"] == "http://h:3/v2/ep" + ping
    assert given["RUNPOD_AI_API_KEY"] == (tmp_path / "worker_key").read_text().strip()
