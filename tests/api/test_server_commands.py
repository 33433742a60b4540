"""`neuroq worker-env` and `neuroq serve --worker`, run as real commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
from harness import WORKER_KEY, start_server


def run_neuroq(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neuroq", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_env_prints_sourceable_exports(tmp_path: Path) -> None:
    result = run_neuroq(
        "worker-env",
        "--endpoint",
        "my-ep",
        "--url",
        "http://10.0.0.5:9000/",
        "--worker-id",
        "pod-7",
        env={"NEUROQ_WORKER_KEYS": WORKER_KEY},
    )
    assert result.returncode == 0, result.stderr
    # Source the output in a shell and read back what a worker would see.
    names = [
        "RUNPOD_WEBHOOK_GET_JOB",
        "RUNPOD_WEBHOOK_POST_OUTPUT",
        "RUNPOD_WEBHOOK_POST_STREAM",
        "RUNPOD_WEBHOOK_PING",
        "RUNPOD_POD_ID",
        "RUNPOD_AI_API_KEY",
        "RUNPOD_PING_INTERVAL",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS",
    ]
    script = result.stdout + "".join(f'printf "%s\\n" "${name}"\n' for name in names)
    shell = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    values = dict(zip(names, shell.stdout.splitlines(), strict=True))
    base = "http://10.0.0.5:9000/v2/my-ep"
    assert values == {
        "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=local",
        "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID",
        "RUNPOD_POD_ID": "pod-7",
        "RUNPOD_AI_API_KEY": WORKER_KEY,
        "RUNPOD_PING_INTERVAL": "10000",
        "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
    }


def test_worker_env_uses_the_generated_key(tmp_path: Path) -> None:
    env = {"NEUROQ_WORKER_KEYS": "", "NEUROQ_DATA_DIR": str(tmp_path / "d")}
    first = run_neuroq("worker-env", "--endpoint", "e", env=env)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "d" / "worker_key").read_text().strip()
    assert f"export RUNPOD_AI_API_KEY={key}" in first.stdout
    second = run_neuroq("worker-env", "--endpoint", "e", env=env)
    assert f"export RUNPOD_AI_API_KEY={key}" in second.stdout
    assert re.search(r"RUNPOD_POD_ID=w-[0-9a-f]+", second.stdout)


def test_worker_env_rejects_bad_ids() -> None:
    result = run_neuroq("worker-env", "--endpoint", "bad/ep")
    assert result.returncode != 0
    assert "--endpoint" in result.stderr
    result = run_neuroq("worker-env", "--endpoint", "ok", "--worker-id", "a b")
    assert result.returncode != 0
    assert "--worker-id" in result.stderr


def test_serve_with_worker_runs_jobs_and_stops_it(tmp_path: Path) -> None:
    handler = tmp_path / "echo_handler.py"
    handler.write_text("def handler(job):\n    return {'echo': job['input']}\n")
    server = start_server(tmp_path / "srv", "--worker", f"{handler}:handler", "--endpoint", "local")
    try:
        reply = httpx.post(
            f"{server.base_url}/local/runsync?wait=30000",
            json={"input": {"hello": "world"}},
            headers=server.client_headers,
            timeout=60,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["status"] == "COMPLETED", reply.text
        assert reply.json()["output"] == {"echo": {"hello": "world"}}
        match = re.search(r"started worker .* \(pid (\d+)\)", server.log())
        assert match, server.log()
        worker_pid = int(match.group(1))
        server.terminate()  # the server alone: its own shutdown must end the worker
        assert server.proc is not None and server.proc.returncode is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(worker_pid):
            time.sleep(0.1)
        assert not _alive(worker_pid), "the worker outlived the server"
    finally:
        server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's init) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ", 1)[1].startswith("Z"))
