"""The job-log part of the JobStore contract (append_logs, read_logs), on every backend.

Lines are fenced like stream chunks (only the holder's attempt appends), capped per attempt with
one TRUNCATED marker, kept across a requeue with their attempt number, and deleted with their
job.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from neuroq.jobs import JobStatus, NewJob, Policy, now_ms
from neuroq.store.base import TRUNCATED_LEVEL, Holder, JobStore, LogLimits
from neuroq.store.sql import read_sql
from neuroq.store.sqlite import SQLiteStore, _split_script

EP = "ep-logs"
LEASE = 30_000
LOST = 60_000


async def running(
    store: JobStore, t: int, worker: str = "w1", *, retention_ms: int | None = None
) -> str:
    policy = Policy(execution_timeout_ms=600_000, ttl_ms=86_400_000, low_priority=False)
    job, _ = await store.submit(NewJob(EP, json.dumps(None), policy, retention_ms=retention_ms), t)
    (taken,) = await store.take(EP, worker, 1, t, LEASE)
    assert taken.id == job.id
    return job.id


async def test_holder_appends_and_readers_page_by_seq(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    holder = Holder("w1", attempt=0)
    assert (
        await store.append_logs(
            job_id, [(t0, "INFO", "one"), (t0 + 1, "WARNING", "two")], t0, holder
        )
        == 2
    )
    assert (
        await store.append_logs(job_id, [(t0 + 2, "ERROR", "Traceback\n  boom")], t0, holder) == 1
    )
    read = await store.read_logs(EP, job_id)
    assert read is not None
    job, lines, truncated = read
    assert job.id == job_id and not truncated
    assert [(ln.seq, ln.attempt, ln.at_ms, ln.level, ln.line) for ln in lines] == [
        (1, 0, t0, "INFO", "one"),
        (2, 0, t0 + 1, "WARNING", "two"),
        (3, 0, t0 + 2, "ERROR", "Traceback\n  boom"),
    ]
    later = await store.read_logs(EP, job_id, after_seq=2)
    assert later is not None and [ln.seq for ln in later[1]] == [3]
    page = await store.read_logs(EP, job_id, after_seq=0, limit=2)
    assert page is not None and [ln.seq for ln in page[1]] == [1, 2]


async def test_strangers_zombies_and_other_endpoints_are_fenced_out(
    store: JobStore, t0: int
) -> None:
    job_id = await running(store, t0)
    assert await store.append_logs(job_id, [(t0, "INFO", "x")], t0, Holder("w2")) is None
    assert await store.append_logs(job_id, [(t0, "INFO", "x")], t0, Holder("w1", attempt=1)) is None
    assert await store.append_logs("no-such-job", [(t0, "INFO", "x")], t0, Holder("w1")) is None
    # the lease lapses: the job runs again elsewhere, and w1 is a zombie
    assert (await store.sweep(t0 + LEASE, LOST, 1)).requeued == [job_id]
    (retaken,) = await store.take(EP, "w2", 1, t0 + LEASE, LEASE)
    assert retaken.retries == 1
    late = t0 + LEASE + 1
    assert (
        await store.append_logs(job_id, [(late, "INFO", "zombie")], late, Holder("w1", attempt=0))
        is None
    )
    assert await store.append_logs(job_id, [(late, "INFO", "zombie")], late, Holder("w1")) is None
    assert (
        await store.append_logs(job_id, [(late, "INFO", "new")], late, Holder("w2", attempt=1)) == 1
    )
    read = await store.read_logs(EP, job_id)
    assert read is not None and [(ln.attempt, ln.line) for ln in read[1]] == [(1, "new")]
    assert await store.read_logs("other-ep", job_id) is None


async def test_a_requeued_attempts_lines_are_kept_with_their_attempt(
    store: JobStore, t0: int
) -> None:
    job_id = await running(store, t0)
    await store.append_logs(job_id, [(t0, "INFO", "first try")], t0, Holder("w1", attempt=0))
    await store.sweep(t0 + LEASE, LOST, 1)
    await store.take(EP, "w2", 1, t0 + LEASE, LEASE)
    await store.append_logs(
        job_id, [(t0, "INFO", "second try")], t0 + LEASE, Holder("w2", attempt=1)
    )
    read = await store.read_logs(EP, job_id)
    assert read is not None
    assert [(ln.seq, ln.attempt, ln.line) for ln in read[1]] == [
        (1, 0, "first try"),
        (2, 1, "second try"),
    ]


async def test_the_holder_may_flush_shortly_after_its_result(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    holder = Holder("w1", attempt=0)
    await store.finish(job_id, output_json=None, error_json='"boom"', now_ms=t0, holder=holder)
    assert (
        await store.append_logs(job_id, [(t0, "ERROR", "tb")], t0 + 1_000, holder, late_ms=60_000)
        == 1
    )
    assert await store.append_logs(job_id, [(t0, "ERROR", "x")], t0 + 1_000, Holder("w2")) is None
    assert (
        await store.append_logs(job_id, [(t0, "ERROR", "tb")], t0 + 61_000, holder, late_ms=60_000)
        is None
    )
    # a job cancelled while queued never had a holder
    policy = Policy(execution_timeout_ms=600_000, ttl_ms=86_400_000, low_priority=False)
    queued, _ = await store.submit(NewJob(EP, "null", policy), t0)
    await store.cancel(EP, queued.id, t0)
    assert await store.append_logs(queued.id, [(t0, "INFO", "x")], t0, Holder("w1")) is None


async def test_a_post_to_a_running_job_renews_its_lease(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    await store.append_logs(job_id, [(t0, "INFO", "x")], t0 + 20_000, Holder("w1"), lease_ms=LEASE)
    assert (await store.sweep(t0 + LEASE, LOST, 1)).requeued == []
    job = await store.get(EP, job_id)
    assert job is not None and job.status is JobStatus.IN_PROGRESS


async def test_caps_keep_whole_lines_then_one_marker(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    holder = Holder("w1", attempt=0)
    limits = LogLimits(lines=5, chars=1_000, line_chars=40)
    stored = await store.append_logs(
        job_id, [(t0, "INFO", f"line {i}") for i in range(3)], t0, holder, limits=limits
    )
    assert stored == 3
    stored = await store.append_logs(
        job_id,
        [(t0, "INFO", "x" * 100), (t0, "INFO", "y"), (t0, "INFO", "z")],
        t0,
        holder,
        limits=limits,
    )
    assert stored == 3  # two lines fit, then the marker
    assert await store.append_logs(job_id, [(t0, "INFO", "more")], t0, holder, limits=limits) == 0
    read = await store.read_logs(EP, job_id)
    assert read is not None
    _, lines, truncated = read
    assert truncated
    assert [ln.level for ln in lines] == ["INFO"] * 5 + [TRUNCATED_LEVEL]
    kept = lines[3].line.split(" ")[0]
    assert set(kept) == {"x"} and lines[3].line.endswith(f" ... ({100 - len(kept)} characters cut)")
    assert len(lines[3].line) <= 40
    assert "truncated" in lines[-1].line


async def test_character_cap_and_the_posters_own_truncation(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    limits = LogLimits(lines=100, chars=10, line_chars=10)
    holder = Holder("w1")
    assert (
        await store.append_logs(
            job_id, [(t0, "INFO", "12345"), (t0, "INFO", "678901")], t0, holder, limits=limits
        )
        == 2
    )
    read = await store.read_logs(EP, job_id)
    assert read is not None and read[1][0].line == "12345" and read[2]

    other = await running(store, t0)
    assert await store.append_logs(other, [(t0, "INFO", "a")], t0, holder, truncated=True) == 2
    read = await store.read_logs(EP, other)
    assert read is not None and read[2] and read[1][-1].level == TRUNCATED_LEVEL


async def test_nul_characters_are_replaced_and_text_round_trips(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0)
    text = "a\x00b <script>\"q\" 'é' 🙂 \\ \n\ttab"
    await store.append_logs(job_id, [(t0, "INFO", text)], t0, Holder("w1"))
    read = await store.read_logs(EP, job_id)
    assert read is not None and read[1][0].line == text.replace("\x00", "\ufffd")


async def test_lines_are_deleted_with_their_job(store: JobStore, t0: int) -> None:
    job_id = await running(store, t0, retention_ms=1_000)
    holder = Holder("w1")
    await store.append_logs(job_id, [(t0, "INFO", "x")], t0, holder)
    await store.finish(job_id, output_json="1", error_json=None, now_ms=t0, holder=holder)
    assert (await store.sweep(t0 + 2_000, LOST, 1)).deleted == 1
    assert await store.read_logs(EP, job_id) is None
    # a new job reusing nothing of the old one starts its log at seq 1
    again = await running(store, t0 + 2_000)
    await store.append_logs(again, [(t0, "INFO", "y")], t0 + 2_000, holder)
    read = await store.read_logs(EP, again)
    assert read is not None and [ln.seq for ln in read[1]] == [1]


async def test_a_version_2_sqlite_file_gains_the_log_table(tmp_path: Path) -> None:
    path = tmp_path / "neuroq.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for filename in ("sqlite_schema.sql", "sqlite_0002_endpoints.sql"):
        for statement in _split_script(read_sql(filename)):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        t = now_ms()
        job_id = await running(store, t)
        assert await store.append_logs(job_id, [(t, "INFO", "x")], t, Holder("w1")) == 1
    finally:
        await store.close()
