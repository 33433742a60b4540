"""`neuroq jobs list|status|cancel|retry|purge` as a user runs them, against a real server (and a
failing worker where a job must end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from cli_support import neuroq
from harness import new_endpoint, start_worker

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def jobs_server(shared_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    worker = start_worker(
        shared_server, "neuroq.demo_handlers:fail", "jobs-fail", tmp_path_factory.mktemp("w")
    )
    yield shared_server
    worker.stop()


def submit(server: Any, ep: str, value: str = "1") -> str:
    done = neuroq("send", "--endpoint", ep, "--async-submit", value, server=server)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_list_shows_a_table_and_pages_as_json(jobs_server: Any) -> None:
    ep = new_endpoint("jl")
    ids = [submit(jobs_server, ep) for _ in range(3)][::-1]
    table = neuroq("jobs", "list", "--endpoint", ep, server=jobs_server)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "STATUS"]
    assert [line.split()[0] for line in lines[1:]] == ids
    assert all(line.split()[1] == "IN_QUEUE" for line in lines[1:])
    page = neuroq("jobs", "list", "--endpoint", ep, "--limit", "2", "--json", server=jobs_server)
    body = json.loads(page.stdout)
    assert [row["id"] for row in body["jobs"]] == ids[:2] and body["nextOffset"] == 2
    rest = neuroq("jobs", "list", "--endpoint", ep, "--offset", "2", server=jobs_server)
    assert [line.split()[0] for line in rest.stdout.splitlines()[1:]] == ids[2:]


def test_list_every_endpoint_by_state(jobs_server: Any) -> None:
    failed = submit(jobs_server, "jobs-fail")
    neuroq("jobs", "status", failed, "--endpoint", "jobs-fail", "--wait", server=jobs_server)
    done = neuroq("jobs", "list", "--all", "--status", "failed", "--json", server=jobs_server)
    rows = json.loads(done.stdout)["jobs"]
    assert failed in {row["id"] for row in rows}
    assert {row["status"] for row in rows} == {"FAILED"}


def test_status_prints_the_status_object_and_wait_follows_to_the_end(jobs_server: Any) -> None:
    job_id = submit(jobs_server, "jobs-fail", '{"message": "kaput"}')
    now = neuroq("jobs", "status", job_id, "--endpoint", "jobs-fail", server=jobs_server)
    assert now.returncode == 0 and json.loads(now.stdout)["id"] == job_id
    waited = neuroq(
        "jobs", "status", job_id, "--endpoint", "jobs-fail", "--wait", server=jobs_server
    )
    assert waited.returncode == 1  # ended, but not COMPLETED
    final = json.loads(waited.stdout)
    assert final["status"] == "FAILED" and "kaput" in json.dumps(final["error"])


def test_cancel_and_purge(jobs_server: Any) -> None:
    ep = new_endpoint("jc")
    first, _, _ = (submit(jobs_server, ep) for _ in range(3))
    cancelled = neuroq("jobs", "cancel", first, "--endpoint", ep, server=jobs_server)
    assert cancelled.returncode == 0 and json.loads(cancelled.stdout)["status"] == "CANCELLED"
    purged = neuroq("jobs", "purge", "--endpoint", ep, "--yes", server=jobs_server)
    assert purged.returncode == 0 and json.loads(purged.stdout)["removed"] == 2
    refused = neuroq("jobs", "purge", "--endpoint", ep, server=jobs_server, stdin="n\n")
    assert refused.returncode == 1 and "Aborted" in refused.stderr


def test_retry_puts_a_failed_job_back_in_the_queue(jobs_server: Any) -> None:
    job_id = submit(jobs_server, "jobs-fail")
    neuroq("jobs", "status", job_id, "--endpoint", "jobs-fail", "--wait", server=jobs_server)
    retried = neuroq("jobs", "retry", job_id, "--endpoint", "jobs-fail", server=jobs_server)
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout)["status"] in ("IN_QUEUE", "IN_PROGRESS", "FAILED")


def test_an_unknown_job_is_an_error_with_exit_2(jobs_server: Any) -> None:
    done = neuroq("jobs", "status", "no-such-job", "--endpoint", "jobs-fail", server=jobs_server)
    assert done.returncode == 2 and "not found" in done.stderr
    assert "Traceback" not in done.stderr


def test_empty_list_says_so_on_stderr(jobs_server: Any) -> None:
    done = neuroq("jobs", "list", "--endpoint", new_endpoint("none"), server=jobs_server)
    assert done.returncode == 0 and done.stdout == ""
    assert "no retained jobs" in done.stderr
