"""Reading a running job's progress output generically (neuroq.client.progress), and the plain
lines shown when stderr is not a terminal."""

from __future__ import annotations

import io
from typing import Any

import pytest

from neuroq.client import progress
from neuroq.client.progress import JobDisplay, Progress, describe, read_progress


@pytest.mark.parametrize(
    ("output", "fraction", "text"),
    [
        # the NeuroQ handler's train progress
        (
            {"epoch": 1, "epochs": 3, "step": 5, "total_steps": 20, "loss": 2.5},
            0.25,
            "epoch=1 epochs=3 loss=2.5",
        ),
        ({"percent": 40, "stage": "upload"}, 0.4, "stage=upload"),
        ({"progress": 0.5}, 0.5, ""),
        ({"progress": 75}, 0.75, ""),
        ({"current": 3, "total": 4}, 0.75, ""),
        ({"epoch": 2, "epochs": 4, "loss": 1.0}, 0.5, "loss=1"),
        ({"step": 3}, None, "step=3"),
        ({"step": 3, "total": 0}, None, "step=3 total=0"),
        ({"done": True, "step": True, "total": 2}, None, "done=true step=true total=2"),
        ("loading weights", None, "loading weights"),
        ([1, 2], None, "[1,2]"),
    ],
)
def test_read_progress(output: Any, fraction: float | None, text: str) -> None:
    found = read_progress(output)
    assert found is not None
    assert found.fraction == fraction
    assert found.text == text


def test_no_output_is_no_progress() -> None:
    assert read_progress(None) is None


def test_describe() -> None:
    assert describe(Progress(5, 20, text="loss=2.5")) == "5/20 (25%) loss=2.5"
    assert describe(Progress(40, 100, percent=True)) == "40%"
    assert describe(Progress(text="warming up")) == "warming up"


def running(output: Any) -> dict[str, Any]:
    return {"id": "j1", "status": "IN_PROGRESS", "output": output}


def test_plain_lines_on_state_change_and_at_most_one_a_second_for_progress(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [10.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    out = io.StringIO()
    display = JobDisplay("j1", 10.0, out, tty=False)
    display.update({"id": "j1", "status": "IN_QUEUE"})
    display.update({"id": "j1", "status": "IN_QUEUE"})
    clock[0] = 11.0
    display.update(running({"step": 1, "total": 4}))
    clock[0] = 11.5
    display.update(running({"step": 2, "total": 4}))  # too soon: skipped
    clock[0] = 12.6
    display.update(running({"step": 3, "total": 4}))
    display.update({"id": "j1", "status": "COMPLETED", "output": {"ok": 1}})
    assert out.getvalue().splitlines() == [
        "job j1: IN_QUEUE after 0.0 s",
        "job j1: IN_PROGRESS after 1.0 s: 1/4 (25%)",
        "job j1: IN_PROGRESS after 2.6 s: 3/4 (75%)",
        "job j1: COMPLETED after 2.6 s",
    ]


def test_terminal_bar_shows_percentage_and_fields() -> None:
    out = io.StringIO()
    display = JobDisplay("j1", 0.0, out, tty=True)
    display.update(running({"step": 5, "total_steps": 20, "loss": 2.5}))
    display.finish()
    drawn = out.getvalue()
    assert " 25%|" in drawn and "5/20 loss=2.5" in drawn and "IN_PROGRESS" in drawn


class _RecordingJob:
    """Stands in for `neuroq.Job` in `follow`: records the hold it is asked to use."""

    id = "j1"
    last_status = None

    def __init__(self) -> None:
        self.hold_ms: int | None = None

    def wait(self, timeout_s: float, *, on_status: Any, long_poll_ms: int) -> dict[str, Any]:
        self.hold_ms = long_poll_ms
        return {"id": "j1", "status": "COMPLETED"}


@pytest.mark.parametrize(("tty", "hold_ms"), [(True, 1000), (False, 5000)])
def test_follow_holds_briefly_so_a_start_shows_soon(
    monkeypatch: pytest.MonkeyPatch, tty: bool, hold_ms: int
) -> None:
    """A job's start does not end a status hold on the server, so off a terminal `follow` holds
    5 s (not 30 s): the IN_PROGRESS line comes at most 5 s after the job started."""
    from neuroq.client import cli_shared

    stderr = io.StringIO()
    monkeypatch.setattr(stderr, "isatty", lambda: tty)
    monkeypatch.setattr(cli_shared.sys, "stderr", stderr)
    job = _RecordingJob()
    assert cli_shared.follow(job, 60.0, 0.0)["status"] == "COMPLETED"  # type: ignore[arg-type]
    assert job.hold_ms == hold_ms
