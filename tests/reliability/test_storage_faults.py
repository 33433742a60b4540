"""Storage faults, seen from outside the server: a store out of space (SQLite's size cap, a real
full tmpfs) or unreachable (PostgreSQL connections killed) answers writes with 503, a JSON error
and Retry-After while reads go on, and the server recovers by itself once the store does. A
database that cannot be opened stops `neuroq serve` with one line naming the file, and a
zero-byte database beside other state is reported loudly instead of silently starting an empty
queue. All through real server processes, real files and raw HTTP."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import (
    POSTGRES_URL,
    ServerProcess,
    drop_postgres_schema,
    free_port,
    postgres_store_url,
    server_env,
    start_server,
    wait_for,
)

EP = "faults"
#: one job's input: large enough that a 1 MB cap fills within a few dozen jobs
BLOB = "x" * 40_000


def _run(client: httpx.Client) -> httpx.Response:
    return client.post(f"/{EP}/run", json={"input": {"blob": BLOB}})


def _fill_until_503(client: httpx.Client, limit: int) -> tuple[list[str], httpx.Response]:
    """Submit jobs until one is refused; the ids accepted before it, and the refusal."""
    accepted = []
    for _ in range(limit):
        reply = _run(client)
        if reply.status_code != 200:
            return accepted, reply
        accepted.append(reply.json()["id"])
    raise AssertionError(f"{limit} jobs accepted; the store never filled up")


def _assert_out_of_space(reply: httpx.Response) -> None:
    assert reply.status_code == 503, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "the job store is out of disk space; retry later"}
    assert int(reply.headers["Retry-After"]) > 0


def _assert_reads_work(client: httpx.Client, job_id: str) -> None:
    status = client.get(f"/{EP}/status/{job_id}")
    assert status.status_code == 200, status.text
    assert status.json()["status"] == "IN_QUEUE"
    health = client.get(f"/{EP}/health")
    assert health.status_code == 200, health.text
    assert health.json()["jobs"]["inQueue"] >= 1


def _poll_until_accepted(client: httpx.Client, timeout_s: float) -> httpx.Response:
    """Resubmit, as a client honouring 503 would, until accepted; every refusal must be a 503."""

    def resubmit() -> httpx.Response:
        reply = _run(client)
        if reply.status_code != 200:
            assert reply.status_code == 503, reply.text
            assert "Retry-After" in reply.headers
        return reply

    return wait_for(
        resubmit, timeout_s, "a submit to be accepted", until=lambda r: r.status_code == 200
    )


def test_size_cap_full_answers_503_keeps_reads_and_recovers(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "srv",
        NEUROQ_SQLITE_MAX_SIZE_MB="1",
        NEUROQ_RETENTION_RUN_S="1",
        NEUROQ_SWEEP_INTERVAL_S="0.2",
    )
    try:
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
            accepted, refusal = _fill_until_503(client, limit=200)
            assert len(accepted) >= 5
            _assert_out_of_space(refusal)
            _assert_reads_work(client, accepted[0])
            assert _run(client).status_code == 503  # still full: nothing was half-written
            # Cancelled jobs are deleted by the sweeper once their retention ends, returning
            # their pages to SQLite; the server uses them again without a restart.
            purged = client.post(f"/{EP}/purge-queue")
            assert purged.status_code == 200, purged.text
            assert purged.json()["removed"] == len(accepted)
            _poll_until_accepted(client, timeout_s=30)
        # new jobs stop short of the cap, so the purge and the sweeps that free space still fit
        assert "refused: the job store is out of disk space" in server.log()
        assert "Traceback" not in server.log()
    finally:
        server.stop()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A real, small filesystem of our own; skips where mounting is not permitted."""
    path.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        pytest.skip("no mount command: cannot make a small filesystem to fill")
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def _fill_disk(path: Path) -> None:
    """Write zeros until the filesystem refuses with ENOSPC."""
    chunk = b"\0" * 65536
    with open(path, "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            # What still fits in the last partial chunk, so no space is left at all.
            with contextlib.suppress(OSError):
                while True:
                    os.write(f.fileno(), b"\0" * 512)


def test_full_filesystem_answers_503_keeps_reads_and_recovers(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "disk", "8m") as disk:
        # The log goes elsewhere (the last --data-dir wins), so it can say what happened.
        logs = tmp_path / "logs"
        logs.mkdir()
        server = ServerProcess(logs, free_port(), server_env(), ["--data-dir", str(disk)])
        server.start()
        try:
            with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
                first = _run(client)
                assert first.status_code == 200
                filler = disk / "filler"
                _fill_disk(filler)
                # The WAL may still reuse space it holds, so a few more may fit.
                _, refusal = _fill_until_503(client, limit=200)
                _assert_out_of_space(refusal)
                _assert_reads_work(client, first.json()["id"])
                filler.unlink()
                _poll_until_accepted(client, timeout_s=30)
            assert "Traceback" not in server.log()
        finally:
            server.stop()


@pytest.mark.postgres
def test_postgres_connections_lost_answer_503_and_recover(tmp_path: Path) -> None:
    if not POSTGRES_URL:
        pytest.skip("set NEUROQ_TEST_POSTGRES_URL to run this on PostgreSQL")
    import psycopg

    schema = f"t_{secrets.token_hex(6)}"
    app_name = f"neuroq-faults-{secrets.token_hex(4)}"
    url = f"{postgres_store_url(schema)}&application_name={app_name}"
    server = start_server(tmp_path / "srv", NEUROQ_STORE=url)
    try:
        with httpx.Client(base_url=server.base_url, headers=server.client_headers) as client:
            assert _run(client).status_code == 200
            with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                sql = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
                pids = [row[0] for row in admin.execute(sql, (app_name,)).fetchall()]
                assert pids
                for pid in pids:
                    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
            refused = 0
            for _ in range(20):
                reply = _run(client)
                if reply.status_code == 200:
                    continue
                refused += 1
                assert reply.status_code == 503, reply.text
                assert reply.json() == {
                    "error": "the job store's database is unavailable; retry later"
                }
                assert int(reply.headers["Retry-After"]) > 0
            # Each dead connection fails the one operation that meets it: a submit here (503),
            # or a background sweep that got there first (logged once, then resumed).
            assert refused >= 1 or "paused: the job store's database is unavailable" in (
                server.log()
            )
            _poll_until_accepted(client, timeout_s=30)
            assert client.get(f"/{EP}/health").status_code == 200
    finally:
        server.stop()
        drop_postgres_schema(schema)


def _serve_once(data_dir: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "neuroq", "serve", "--port", str(free_port())]
    cmd += ["--data-dir", str(data_dir)]
    return subprocess.run(cmd, env=server_env(), capture_output=True, text=True, timeout=60)


def test_corrupt_database_stops_serve_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    db = data_dir / "neuroq.db"
    db.write_bytes(b"this is not a SQLite database, just some bytes " * 200)
    done = _serve_once(data_dir)
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert str(db) in lines[0]
    assert "not a usable SQLite database" in lines[0]
    assert "restore a backup" in lines[0]


def test_unopenable_database_stops_serve_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    db = data_dir / "neuroq.db"
    db.mkdir()  # unopenable for any user, root included (who ignores file modes)
    done = _serve_once(data_dir)
    assert done.returncode != 0
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert str(db) in lines[0]
    assert "cannot be opened" in lines[0]


def test_zero_byte_database_beside_other_state_is_reported(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    (data_dir / "neuroq.db").touch()
    (data_dir / "checkpoints").mkdir()
    server = start_server(data_dir)
    try:
        log = server.log()
        assert f"{data_dir / 'neuroq.db'} is empty (0 bytes)" in log
        assert "EMPTY job queue" in log
        assert "checkpoints" in log
    finally:
        server.stop()


def test_zero_byte_database_alone_is_a_quiet_first_start(tmp_path: Path) -> None:
    data_dir = tmp_path / "srv"
    data_dir.mkdir()
    (data_dir / "neuroq.db").touch()
    server = start_server(data_dir)
    try:
        assert "is empty (0 bytes)" not in server.log()
    finally:
        server.stop()
