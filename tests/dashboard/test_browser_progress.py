"""In Chromium, at a phone's width (390 px) and a desktop's (1280 px): a job page's progress bar
moving with the worker's updates and its Logs section, readable and growing without a reload,
and the overview's mark on a queue no worker has served; none of them wider than the screen.
Uses test_browser's fixtures on a server with no worker of its own: a raw HTTP worker posts the
progress and the log lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_browser
from dashstack import Stack, submit_job
from harness import RawWorker, new_endpoint, start_server
from test_browser import (
    WIDTHS,
    assert_within_viewport,
    horizontal_overflow,
    screenshot,
    signed_in_context,
)
from test_progress_unserved import TRAIN_PROGRESS

# test_browser's browser, bound to its name here so that pytest finds it in this module
browser = test_browser.browser

#: one unbroken word longer than a desktop screen, as a path in a traceback can be
LONG_WORD = "/data/" + "x" * 300 + "/model.pt"
LOG_LINES = [
    {"level": "INFO", "line": "epoch 2 of 5: loss 1.2345"},
    {"level": "WARNING", "line": "<b>slow</b> step: 2.5 s"},
    {
        "level": "ERROR",
        "line": "Traceback (most recent call last):\n"
        f'  File "{LONG_WORD}", line 1, in <module>\n'
        "ValueError: a long line of a traceback " + "that keeps going " * 12,
    },
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Replaces test_browser's stack (three workers) for this module: only the server."""
    tmp = tmp_path_factory.mktemp("browser-progress")
    server = start_server(tmp / "srv")
    yield Stack(server, [], tmp)
    server.stop()


@pytest.fixture(params=WIDTHS, ids=lambda size: f"{size[0]}px")
def tab(request: pytest.FixtureRequest, browser: Any, stack: Stack) -> Iterator[Any]:
    """A signed-in page at each of WIDTHS."""
    width, height = request.param
    context, page = signed_in_context(browser, stack, width, height)
    yield page
    context.close()


@pytest.fixture
def running(stack: Stack) -> Iterator[tuple[RawWorker, str, str]]:
    """A train job on an endpoint of its own, taken by a raw worker: (worker, endpoint, id)."""
    ep = new_endpoint("bp-train")
    job_id = submit_job(stack.server, ep, {"action": "train"})
    worker = RawWorker(stack.server, ep)
    try:
        assert worker.take()["id"] == job_id
        yield worker, ep, job_id
    finally:
        worker.close()


def test_progress_bar_moves_live(
    tab: Any, running: tuple[RawWorker, str, str], tmp_path: Path
) -> None:
    worker, ep, job_id = running
    worker.progress(job_id, TRAIN_PROGRESS)
    tab.goto(f"/jobs/{ep}/{job_id}")
    tab.evaluate("window.__noReload = true")
    bar = tab.locator("#job progress")
    assert bar.evaluate("el => el.position") == pytest.approx(0.3)
    box = assert_within_viewport(tab, bar, "the progress bar")
    assert box["width"] >= 150, f"a bar too short to read: {box}"
    words = tab.locator("#job .progress-words")
    assert words.inner_text() == "30% · step 120 of 400"
    assert_within_viewport(tab, words, "the progress words")
    worker.progress(job_id, {**TRAIN_PROGRESS, "step": 300, "epoch": 4})
    tab.locator('#job progress[value="0.7500"]').wait_for()
    assert tab.evaluate("window.__noReload") is True, "the page reloaded instead of updating"
    assert tab.locator("#job b").count() == 0  # the model name's markup stays text
    assert horizontal_overflow(tab) <= 0
    screenshot(tab, f"job-progress-{tab.viewport_size['width']}", tmp_path)


def test_job_page_logs_are_readable_and_live(
    tab: Any, running: tuple[RawWorker, str, str], tmp_path: Path
) -> None:
    """The Logs section beside the progress bar: each line with its level, a traceback's lines
    kept apart and its longest word wrapped inside the screen, markup shown as text, and a line
    the worker posts later shown without a reload."""
    worker, ep, job_id = running
    worker.progress(job_id, TRAIN_PROGRESS)
    worker.post("job-log", job_id, {"lines": LOG_LINES})
    tab.goto(f"/jobs/{ep}/{job_id}")
    tab.evaluate("window.__noReload = true")
    tab.locator("#job progress").wait_for()
    logs = tab.locator("#job table.logs")
    assert tab.locator("#job h2", has_text="Logs").inner_text() == "Logs (3)"
    rows = logs.locator("tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).get_attribute("class") for i in range(3)] == [
        "log-info",
        "log-warning",
        "log-error",
    ]
    assert "<b>slow</b> step" in rows.nth(1).inner_text()
    assert logs.locator("b").count() == 0
    traceback = rows.nth(2).locator("pre")
    assert traceback.inner_text().splitlines()[0] == "Traceback (most recent call last):"
    assert LONG_WORD in traceback.inner_text().replace("\n", "")
    card = assert_within_viewport(tab, tab.locator("#job"), "the job card")
    for i in range(3):
        line = assert_within_viewport(tab, rows.nth(i).locator("pre"), f"log line {i}")
        # the text, not the time and level, gets most of the row
        assert line["width"] >= 0.55 * card["width"], f"log line {i} squeezed: {line}, {card}"
    assert horizontal_overflow(tab) <= 0
    screenshot(tab, f"job-logs-{tab.viewport_size['width']}", tmp_path)

    worker.post("job-log", job_id, {"lines": [{"level": "INFO", "line": "epoch 3 of 5"}]})
    tab.locator("#job h2", has_text="Logs (4)").wait_for()
    assert rows.nth(3).locator("pre").inner_text() == "epoch 3 of 5"
    assert tab.evaluate("window.__noReload") is True, "the page reloaded instead of updating"


def test_overview_marks_an_unserved_queue(tab: Any, stack: Stack, tmp_path: Path) -> None:
    ep = new_endpoint("bp-never")
    submit_job(stack.server, ep, {})
    tab.goto("/")
    badge = tab.locator(f'tr[data-endpoint="{ep}"] .badge.unserved')
    badge.wait_for()
    assert badge.inner_text() == "no worker has served this endpoint"
    assert f"--endpoint {ep}" in (badge.get_attribute("title") or "")
    assert_within_viewport(tab, badge, "the badge")
    assert horizontal_overflow(tab) <= 0
    screenshot(tab, f"overview-unserved-{tab.viewport_size['width']}", tmp_path)
    tab.goto(f"/jobs?endpoint={ep}")
    note = tab.locator(f'p.warning[data-unserved="{ep}"]')
    assert f"--endpoint {ep}" in note.inner_text()
    assert_within_viewport(tab, note, "the warning above the job list")
    assert horizontal_overflow(tab) <= 0
