"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

Every wait is on a condition in the page (Playwright's auto-waiting selectors), never a sleep.
Screenshots land in the test's tmp dir, or in $NEUROQ_SCREENSHOT_DIR when set, for a human look.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashstack import NEUROQ_EP, SLEEP_EP, STREAM_EP, Stack, job_status, running_stack, submit_job
from harness import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if not os.path.exists(CHROMIUM):
    pytest.skip(
        "no chromium binary: apt-get install -y chromium (CI installs it)", allow_module_level=True
    )

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 20_000
#: (width, height) of the viewports the layout tests run at: a phone and a desktop
WIDTHS = [(390, 844), (1280, 800)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("browser")) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """A fresh browser context, signed in through the login form."""
    context = browser.new_context(base_url=stack.server.url)
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.goto("/")
    assert "/login" in tab.url
    tab.fill("input[name=key]", stack.server.api_key)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{stack.server.url}/")
    yield tab
    context.close()


def screenshot(tab: Any, name: str, tmp_path: Path) -> None:
    target = Path(os.environ.get("NEUROQ_SCREENSHOT_DIR", tmp_path))
    target.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(target / f"{name}.png"), full_page=True)


def horizontal_overflow(tab: Any) -> int:
    """How many px the page is wider than the viewport (0 or less: no sideways scrolling)."""
    overflow: int = tab.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    return overflow


def box_of(locator: Any, what: str) -> dict[str, float]:
    """`locator`'s box. The page's live loop swaps whole fragments in (a queued job's delay
    changes at every poll), and a box read from an element swapped out meanwhile is None, so a
    None is read again, from the element now in its place."""
    box: dict[str, float] = wait_for(locator.bounding_box, 5, f"{what} to be shown", 0.05)
    return box


def boxes_of(tab: Any, selector: str) -> list[dict[str, float]]:
    """The boxes of every element `selector` matches, read in one step (see `box_of`)."""
    found: list[dict[str, float]] = tab.eval_on_selector_all(
        selector,
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return {x: r.x, y: r.y, width: r.width, height: r.height}; })",
    )
    return found


def assert_within_viewport(tab: Any, locator: Any, what: str) -> dict[str, float]:
    """`locator`'s box lies inside the viewport's width; its box."""
    box = box_of(locator, what)
    width = tab.viewport_size["width"]
    assert box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, f"{what} {box} at {width}px"
    return dict(box)


def test_a_wrong_key_is_refused(browser: Any, stack: Stack) -> None:
    context = browser.new_context(base_url=stack.server.url)
    tab = context.new_page()
    tab.goto("/jobs")
    tab.fill("input[name=key]", "not-the-key")
    tab.click("button[type=submit]")
    assert tab.locator(".error").inner_text() == "That API key is not valid."
    assert context.cookies() == []
    tab.goto("/")
    assert "/login" in tab.url
    context.close()


def test_session_cookie_is_http_only_and_strict(page: Any) -> None:
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "neuroq_session"
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""


def test_a_submitted_job_appears_and_finishes_live(page: Any, stack: Stack, tmp_path: Path) -> None:
    page.goto(f"/jobs?endpoint={SLEEP_EP}")
    page.evaluate("window.__noReload = true")
    job_id = submit_job(stack.server, SLEEP_EP, {"seconds": 1.0, "note": "<b>not bold</b>"})
    row = page.locator(f'tr[data-job="{job_id}"]')
    row.locator(".badge", has_text="IN_PROGRESS").wait_for()
    row.locator(".badge", has_text="COMPLETED").wait_for()
    assert page.evaluate("window.__noReload") is True, "the page reloaded instead of updating"

    page.goto("/")
    endpoint_row = page.locator(f'tr[data-endpoint="{SLEEP_EP}"]')
    assert int(endpoint_row.locator('td[data-col="completed"]').inner_text().split()[0]) >= 1
    page.locator("#plots svg").first.wait_for()
    page.locator(f'#workers td:text-is("{SLEEP_EP}")').wait_for()
    screenshot(page, "dashboard", tmp_path)

    row_link = f'a[href="/jobs/{SLEEP_EP}/{job_id}"]'
    page.goto(f"/jobs?endpoint={SLEEP_EP}")
    page.click(row_link)
    page.wait_for_url(f"**/jobs/{SLEEP_EP}/{job_id}")
    job = page.locator("#job")
    assert '"slept": 1.0' in job.inner_text()
    # the input is shown as text, its markup inert
    assert "<b>not bold</b>" in job.inner_text()
    assert job.locator("b").count() == 0
    facts = page.locator("dl.facts").inner_text()
    assert "Delay" in facts and "Execution" in facts and "Retries" in facts
    screenshot(page, "job", tmp_path)


def test_cancel_a_running_job(page: Any, stack: Stack, tmp_path: Path) -> None:
    marker = tmp_path / "stopped"
    job_id = submit_job(stack.server, SLEEP_EP, {"seconds": 60, "marker": str(marker)})
    page.goto(f"/jobs/{SLEEP_EP}/{job_id}")
    page.locator("#job .badge", has_text="IN_PROGRESS").wait_for()
    dialogs: list[str] = []

    def accept(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.on("dialog", accept)
    page.click('button[data-action="cancel"]')
    page.locator("#job .badge", has_text="CANCELLED").wait_for()
    assert dialogs == [f"Cancel job {job_id}?"]
    assert job_status(stack.server, SLEEP_EP, job_id) == "CANCELLED"
    # the worker really stopped the handler (it writes the marker when cancelled)
    wait_for(marker.exists, 20, "the handler to write its marker")
    assert marker.read_text() == "cancelled"


def test_declining_the_confirmation_changes_nothing(page: Any, stack: Stack) -> None:
    job_id = submit_job(stack.server, "dash-nobody", {})
    page.goto(f"/jobs/dash-nobody/{job_id}")
    page.on("dialog", lambda dialog: dialog.dismiss())
    page.click('button[data-action="cancel"]')
    assert page.locator("#flash").inner_text() == ""
    assert job_status(stack.server, "dash-nobody", job_id) == "IN_QUEUE"


def test_playground_shows_streamed_text(page: Any, stack: Stack, tmp_path: Path) -> None:
    page.goto("/playground")
    page.fill("input[name=endpoint_id]", STREAM_EP)
    page.fill("textarea[name=prompt]", "Tell me about queues")
    page.click("details summary")
    page.fill("textarea[name=extra]", '{"count": 6, "delay": 0.3}')
    page.click("#playground button[type=submit]")
    output = page.locator("#pg-output")
    page.locator("#pg-output", has_text='{"i":1}').wait_for()
    # text arrived while the job was still running: it streamed
    assert page.locator("#pg-status").inner_text() == "IN_PROGRESS"
    page.locator("#pg-status", has_text="COMPLETED").wait_for()
    assert output.inner_text().split() == [f'{{"i":{i}}}' for i in range(6)]
    screenshot(page, "playground", tmp_path)
    job_id = page.locator("#pg-job").inner_text()
    reply = httpx.get(
        f"{stack.server.base_url}/{STREAM_EP}/status/{job_id}",
        headers=stack.server.client_headers,
    ).json()
    assert reply["status"] == "COMPLETED"


def test_playground_runs_a_neuroq_generate_job(page: Any, stack: Stack) -> None:
    """The default endpoint, served by neuroq.handler with the shipped model: the text shown is
    the reply the job returns."""
    page.goto("/playground")
    assert page.input_value("input[name=endpoint_id]") == NEUROQ_EP
    page.fill("textarea[name=prompt]", "ChatGPTについて教えて")
    page.fill("input[name=max_length]", "40")
    page.click("#playground button[type=submit]")
    page.locator("#pg-status", has_text="COMPLETED").wait_for(timeout=60_000)
    shown = page.locator("#pg-output").inner_text()
    job_id = page.locator("#pg-job").inner_text()
    reply = httpx.get(
        f"{stack.server.base_url}/{NEUROQ_EP}/status/{job_id}",
        headers=stack.server.client_headers,
    ).json()
    assert reply["status"] == "COMPLETED", reply
    generated = reply["output"]["generated"]
    assert generated.strip()
    assert shown.strip() == generated.strip()


def test_fits_a_phone_screen(browser: Any, stack: Stack, tmp_path: Path) -> None:
    context = browser.new_context(
        base_url=stack.server.url, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    tab = context.new_page()
    tab.goto("/login")
    tab.fill("input[name=key]", stack.server.api_key)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{stack.server.url}/")
    for path in ("/", "/jobs", "/playground"):
        tab.goto(path)
        overflow = horizontal_overflow(tab)
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone screen"
    screenshot(tab, "phone", tmp_path)
    context.close()


def signed_in_context(browser: Any, stack: Stack, width: int, height: int) -> Any:
    context = browser.new_context(
        base_url=stack.server.url,
        viewport={"width": width, "height": height},
        is_mobile=width < 600,
    )
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    tab.goto("/login")
    tab.fill("input[name=key]", stack.server.api_key)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{stack.server.url}/")
    return context, tab


@pytest.mark.parametrize(("width", "height", "max_page_px"), [(390, 844, 3500), (1280, 800, 2000)])
def test_job_list_ids_stay_on_one_line(
    browser: Any, stack: Stack, tmp_path: Path, width: int, height: int, max_page_px: int
) -> None:
    """A full page of 25 jobs: each id on one line, cut with an ellipsis where it does not fit
    (the whole id in its title and link), and a page a phone can scroll through; the ids used
    to break after every character, making the page about 8,000 px tall."""
    endpoint = "dash-list"  # no worker: the jobs stay queued
    ids = [submit_job(stack.server, endpoint, {"n": i}) for i in range(25)]
    context, tab = signed_in_context(browser, stack, width, height)
    tab.goto(f"/jobs?endpoint={endpoint}")
    links = tab.locator("#jobs a.id")
    assert links.count() == 25
    line_px = tab.evaluate(
        "parseFloat(getComputedStyle(document.querySelector('#jobs a.id')).lineHeight) || 20"
    )
    heights = [box["height"] for box in boxes_of(tab, "#jobs a.id")]
    assert len(heights) == 25
    for i, height in enumerate(heights):
        assert height <= 1.5 * line_px, f"id {i} wraps: {height}px"
    first = links.first
    assert first.get_attribute("title") in ids
    assert first.get_attribute("href") == f"/jobs/{endpoint}/{first.get_attribute('title')}"
    page_px = tab.evaluate("document.documentElement.scrollHeight")
    assert page_px <= max_page_px, f"the job list is {page_px}px tall at {width}px wide"
    assert horizontal_overflow(tab) <= 0
    screenshot(tab, f"jobs-{width}", tmp_path)
    context.close()


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_overview_plots_throughput_and_latency_per_endpoint(
    browser: Any, stack: Stack, tmp_path: Path, width: int, height: int
) -> None:
    job_id = submit_job(stack.server, STREAM_EP, {"count": 1, "delay": 0})
    wait_for(
        lambda: job_status(stack.server, STREAM_EP, job_id),
        30,
        "the job to complete",
        until=lambda status: status == "COMPLETED",
    )
    context, tab = signed_in_context(browser, stack, width, height)
    section = tab.locator(f'#plots section[data-endpoint="{STREAM_EP}"]')
    section.wait_for()
    figures = section.locator("figure")
    assert figures.count() == 2
    assert "Throughput" in figures.nth(0).inner_text() and "Latency" in figures.nth(1).inner_text()
    assert section.locator("rect.s-ok").count() >= 1
    assert section.locator("circle.s-exec").count() >= 1
    # axes: three value labels and five clock times on each plot, inside the plot's box
    for i in range(2):
        svg = figures.nth(i).locator("svg")
        assert svg.locator("text").count() == 8
        svg_box = box_of(svg, f"plot {i}")
        assert svg_box["width"] <= width
        assert svg_box["height"] >= 100, "a plot, not a sparkline"
    screenshot(tab, f"overview-{width}", tmp_path)
    context.close()


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_json_request_form(
    browser: Any, stack: Stack, tmp_path: Path, width: int, height: int
) -> None:
    """The JSON request form beside the playground: checked as JSON while typed, its job run by
    a real worker (three chunks: the count typed), the form and its result inside the screen."""
    context, page = signed_in_context(browser, stack, width, height)
    page.goto("/playground")
    form = page.locator("#json-request")
    for field in ("input[name=endpoint_id]", "textarea[name=input]", "button[type=submit]"):
        assert_within_viewport(page, form.locator(field), field)
    form.locator("input[name=endpoint_id]").fill(STREAM_EP)
    textarea = form.locator("textarea[name=input]")
    textarea.fill('{"count": 3,')
    page.locator("#json-problem", has_text="not valid JSON").wait_for()
    assert form.locator("button[type=submit]").is_disabled()
    textarea.fill('{"count": 3, "delay": 0.05}')
    assert page.locator("#json-problem").is_hidden()
    form.locator("button[type=submit]").click()
    page.locator("#json-status", has_text="COMPLETED").wait_for()
    assert page.locator("#json-output").inner_text().split() == [f'{{"i":{i}}}' for i in range(3)]
    assert_within_viewport(page, page.locator("#json-output"), "the output")
    job_id = page.locator("#json-job").inner_text()
    assert job_status(stack.server, STREAM_EP, job_id) == "COMPLETED"
    assert horizontal_overflow(page) <= 0
    screenshot(page, f"json-request-{width}", tmp_path)
    context.close()
