"""In Chromium: a running job's progress bar moves with the worker's updates, without a reload,
and the overview marks a queue no worker has served. Uses test_browser's fixtures on a server
with no worker of its own: a raw HTTP worker posts the progress."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_browser
from dashstack import Stack
from harness import RawWorker, new_endpoint, start_server
from test_browser import screenshot, submit
from test_progress_unserved import TRAIN_PROGRESS

# test_browser's fixtures, bound to their names here so that pytest finds them in this module
browser = test_browser.browser
page = test_browser.page


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Replaces test_browser's stack (three workers) for this module: only the server."""
    tmp = tmp_path_factory.mktemp("browser-progress")
    server = start_server(tmp / "srv")
    yield Stack(server, [], tmp)
    server.stop()


def test_progress_bar_moves_live(page: Any, stack: Stack, tmp_path: Path) -> None:
    ep = new_endpoint("bp-train")
    job_id = submit(stack, ep, {"action": "train"})
    worker = RawWorker(stack.server, ep)
    try:
        assert worker.take()["id"] == job_id
        worker.progress(job_id, TRAIN_PROGRESS)
        page.goto(f"/jobs/{ep}/{job_id}")
        page.evaluate("window.__noReload = true")
        bar = page.locator("#job progress")
        assert bar.evaluate("el => el.position") == pytest.approx(0.3)
        assert "30% · step 120 of 400" in page.locator("#job .progress").inner_text()
        worker.progress(job_id, {**TRAIN_PROGRESS, "step": 300, "epoch": 4})
        page.locator('#job progress[value="0.7500"]').wait_for()
        assert page.evaluate("window.__noReload") is True, "the page reloaded instead of updating"
        assert page.locator("#job b").count() == 0  # the model name's markup stays text
        screenshot(page, "job-progress", tmp_path)
    finally:
        worker.close()


def test_overview_marks_an_unserved_queue(page: Any, stack: Stack, tmp_path: Path) -> None:
    ep = new_endpoint("bp-never")
    submit(stack, ep, {})
    page.goto("/")
    badge = page.locator(f'tr[data-endpoint="{ep}"] .badge.unserved')
    badge.wait_for()
    assert badge.inner_text() == "no worker has served this endpoint"
    assert f"--endpoint {ep}" in (badge.get_attribute("title") or "")
    screenshot(page, "overview-unserved", tmp_path)
