"""The dashboard's HTML without a server: render takes plain records, so hostile values can be
fed straight in and every one must come out escaped."""

from __future__ import annotations

import json

from neuroq.api.dashboard import render
from neuroq.jobs import Job, JobStatus, Policy
from neuroq.store.base import WorkerInfo

EVIL = '<script>alert("x")</script>'
T0 = 1_700_000_000_000


def hostile_job() -> Job:
    return Job(
        id="job-1",
        endpoint_id="ep",
        status=JobStatus.FAILED,
        input_json=json.dumps({"prompt": EVIL}),
        policy=Policy(),
        created_at_ms=T0,
        started_at_ms=T0 + 10,
        finished_at_ms=T0 + 20,
        worker_id=EVIL,
        webhook="http://example.test/hook",
        error_json=json.dumps(EVIL),
    )


def test_job_details_escape_everything_from_the_job() -> None:
    chunks = [(1, json.dumps({"output": EVIL})), (2, EVIL)]
    shown = render.job_details(hostile_job(), chunks, [], [], T0 + 30)
    assert "<script" not in shown
    assert "&lt;script&gt;" in shown
    assert 'data-action="retry"' in shown and 'data-action="cancel"' not in shown
    assert "Stream chunks (2)" in shown


def test_job_details_show_only_the_newest_chunks() -> None:
    chunks = [(seq, "{}") for seq in range(1, render.CHUNKS_SHOWN + 11)]
    shown = render.job_details(hostile_job(), chunks, [], [], T0 + 30)
    assert f"showing the last {render.CHUNKS_SHOWN} of {render.CHUNKS_SHOWN + 10}" in shown
    assert '<li value="11">' in shown and '<li value="10">' not in shown


def test_worker_table_escapes_worker_ids() -> None:
    worker = WorkerInfo(EVIL, "ep", "ready", T0, held_job_ids=(EVIL,))
    shown = render.workers_table([worker], T0 + 1500)
    assert "<script" not in shown
    assert "running" in shown and "1.50 s ago" in shown


def test_document_has_navigation_only_when_signed_in() -> None:
    signed_out = render.document(EVIL, "<p>body</p>", path="/", csrf=None)
    assert "<nav>" not in signed_out and '<meta name="csrf-token" content="">' in signed_out
    assert "<script>alert" not in signed_out
    signed_in = render.document("Jobs", "", path="/jobs", csrf="abc", live='/ui/live/jobs?"x')
    assert '<a href="/jobs" aria-current=page>Jobs</a>' in signed_in
    assert 'name="csrf" value="abc"' in signed_in
    assert 'data-live="/ui/live/jobs?&quot;x"' in signed_in


def test_login_body_escapes_the_next_path() -> None:
    shown = render.login_body('/jobs"><script>', error=EVIL)
    assert "<script" not in shown
    assert 'value="/jobs&quot;&gt;&lt;script&gt;"' in shown
