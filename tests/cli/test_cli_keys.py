"""Zero configuration next to a local server, for every entry point: `neuroq serve` generates
its keys into .neuroq/, and `neuroq worker`, `neuroq send` and the library's `send_and_wait`,
run from the same directory, find the server, the endpoint and their keys with nothing set."""

from __future__ import annotations

import json
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
