"""A real server and a real `neuroq worker` process: what the handler logs, and its traceback,
travel with the job to the logs route, capped per job; a zombie's post is ignored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from harness import (
    ServerProcess,
    WorkerProcess,
    start_server,
    start_worker,
    status,
    submit,
    wait_for,
)

HANDLERS = Path(__file__).with_name("log_handlers.py")


def finished(client: httpx.Client, ep: str, job_id: str) -> dict[str, Any]:
    return wait_for(
        lambda: status(client, ep, job_id),
        30.0,
        f"job {job_id} to end",
        until=lambda body: body["status"] in ("COMPLETED", "FAILED"),
    )


def logs(client: httpx.Client, ep: str, job_id: str, after: int = 0) -> dict[str, Any]:
    reply = client.get(f"/{ep}/logs/{job_id}?after={after}&limit=5000")
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def run_worker(server: ServerProcess, handler: str, ep: str, tmp_path: Path) -> WorkerProcess:
    return start_worker(server, f"{HANDLERS}:{handler}", ep, tmp_path, "--worker-id", f"w-{ep}")


def test_a_failing_handlers_lines_and_traceback_reach_the_logs_route(
    server: ServerProcess, ep: str, tmp_path: Path
) -> None:
    worker = run_worker(server, "fails", ep, tmp_path)
    try:
        with server.client() as client:
            job_id = submit(client, ep, {"n": 7})
            assert finished(client, ep, job_id)["status"] == "FAILED"
            body = logs(client, ep, job_id)
    finally:
        worker.stop()
    lines = body["lines"]
    assert body["status"] == "FAILED" and body["truncated"] is False
    assert [(x["level"], x["attempt"]) for x in lines] == [
        ("INFO", 0),
        ("WARNING", 0),
        ("ERROR", 0),
    ], lines
    assert lines[0]["line"] == "starting with n=7"
    assert lines[1]["line"] == "about to fail <b>'x'</b> & more"
    assert lines[2]["line"].startswith("Traceback (most recent call last):")
    assert lines[2]["line"].endswith("ValueError: boom from the handler")
    assert [x["seq"] for x in lines] == [1, 2, 3]
    # the runtime's own lines stay in the worker's log
    assert "handler raised ValueError" in worker.log()
    assert not any("started" in x["line"] for x in lines)

    cli = [sys.executable, "-m", "neuroq", "jobs", "logs", job_id, "--url", server.url]
    cli += ["--endpoint", ep, "--key", server.api_key]
    for extra in ([], ["--follow"]):
        out = subprocess.run(cli + extra, capture_output=True, text=True, timeout=60, check=True)
        printed = out.stdout.splitlines()
        assert printed[0].endswith(" INFO starting with n=7"), out.stdout
        assert printed[1].endswith(" WARNING about to fail <b>'x'</b> & more")
        assert " ERROR Traceback (most recent call last):" in printed[2]
        assert printed[-1] == "ValueError: boom from the handler"

    with httpx.Client(base_url=server.url, timeout=30) as browser:
        signed_in = browser.post("/login", data={"key": server.api_key, "next": "/"})
        assert signed_in.status_code == 303, signed_in.text
        page = browser.get(f"/jobs/{ep}/{job_id}")
    assert page.status_code == 200
    assert "<h2>Logs (3)</h2>" in page.text
    assert "starting with n=7" in page.text
    assert "about to fail &lt;b&gt;&#x27;x&#x27;&lt;/b&gt; &amp; more" in page.text
    assert "<b>'x'</b>" not in page.text
    assert "ValueError: boom from the handler" in page.text


def test_a_flooding_handler_is_capped_with_one_marker(
    server: ServerProcess, ep: str, tmp_path: Path
) -> None:
    worker = run_worker(server, "floods", ep, tmp_path)
    try:
        with server.client() as client:
            job_id = submit(client, ep, {"lines": 3_000, "width": 10_000})
            assert finished(client, ep, job_id)["status"] == "COMPLETED"
            body = logs(client, ep, job_id)
    finally:
        worker.stop()
    lines = body["lines"]
    assert body["truncated"] is True
    assert lines[-1]["level"] == "TRUNCATED"
    assert sum(x["level"] == "TRUNCATED" for x in lines) == 1
    assert len(lines) <= 1_001
    assert sum(len(x["line"]) for x in lines[:-1]) <= 256 * 1024
    assert all(len(x["line"]) <= 8 * 1024 for x in lines)
    assert lines[0]["line"].startswith("line 0 yyy") and lines[0]["line"].endswith(
        "characters cut)"
    )
    assert not any("print()" in x["line"] for x in lines)


def test_a_zombies_log_post_is_ignored(tmp_path: Path, ep: str) -> None:
    """A worker whose lease lapsed (the job was requeued and taken again) posts nothing."""
    server = start_server(tmp_path / "lost", NEUROQ_WORKER_LOST_S="1", NEUROQ_JOB_TAKE_HOLD_S="1")
    worker = httpx.Client(base_url=server.base_url, headers=server.worker_headers, timeout=30)
    try:
        zombie_scenario(server, worker, ep)
    finally:
        worker.close()
        server.stop()


def zombie_scenario(server: ServerProcess, worker: httpx.Client, ep: str) -> None:
    with server.client() as client:
        job_id = submit(client, ep)
        first = worker.get(f"/{ep}/job-take/w-old?job_in_progress=0").json()
        assert first["id"] == job_id and first["attempt"] == 0
        line = {"lines": [{"line": "from the first attempt"}]}
        assert worker.post(f"/{ep}/job-log/w-old/{job_id}?attempt=0", json=line).json() == {
            "stored": 1
        }
        # the server loses the worker: its lease lapses and the job runs again elsewhere
        taken = wait_for(
            lambda: worker.get(f"/{ep}/job-take/w-new?job_in_progress=0"),
            30.0,
            "the job to be requeued and taken again",
            until=lambda reply: reply.status_code == 200,
        ).json()
        assert taken["id"] == job_id and taken["attempt"] == 1
        zombie = worker.post(f"/{ep}/job-log/w-old/{job_id}?attempt=0", json=line)
        assert zombie.status_code == 200 and "ignored" in zombie.json()
        new = {"lines": [{"line": "from the second attempt"}]}
        assert worker.post(f"/{ep}/job-log/w-new/{job_id}?attempt=1", json=new).json() == {
            "stored": 1
        }
        body = logs(client, ep, job_id)
    assert [(x["attempt"], x["line"]) for x in body["lines"]] == [
        (0, "from the first attempt"),
        (1, "from the second attempt"),
    ]
