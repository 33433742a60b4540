"""Over HTTP: a running job's progress as a bar on its page, kept live; endpoints no worker has
served marked on the overview and the job list; and the job list reading the same page as
GET /v2/jobs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest
from dashstack import ServerProcess, sign_in, start_server, submit_job
from harness import RawWorker, new_endpoint

from neuroq.api.dashboard import render

#: what NeuroQ's train action reports (neuroq.handler.actions), with a hostile model name
TRAIN_PROGRESS = {
    "status": "training",
    "model": "<b>m</b>",
    "epoch": 2,
    "epochs": 5,
    "step": 120,
    "total_steps": 400,
    "loss": 1.2345,
    "tokens_per_s": 5321.4,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("dash-progress"))
    yield proc
    proc.stop()


def endpoint_row(page: str, endpoint: str) -> str:
    match = re.search(rf'<tr data-endpoint="{endpoint}">.*?</tr>', page)
    assert match is not None, f"no row for {endpoint}"
    return match.group(0)


def test_training_progress_is_a_bar_kept_live(server: ServerProcess) -> None:
    ep = new_endpoint("dp-train")
    job_id = submit_job(server, ep)
    worker = RawWorker(server, ep)
    try:
        assert worker.take()["id"] == job_id
        worker.progress(job_id, TRAIN_PROGRESS)
        with sign_in(server) as ui:
            page = ui.get(f"/jobs/{ep}/{job_id}").text
            assert '<progress max="1" value="0.3000"' in page
            assert "30% · step 120 of 400" in page
            assert "<dt>tokens_per_s</dt><dd>5321.4</dd>" in page
            assert "<dt>epochs</dt><dd>5</dd>" in page
            assert "&lt;b&gt;m&lt;/b&gt;" in page and "<b>m</b>" not in page
            # the page's live fragment carries the next update
            worker.progress(job_id, {**TRAIN_PROGRESS, "step": 200})
            live = ui.get(f"/ui/live/job/{ep}/{job_id}").json()["parts"]["job"]
            assert '<progress max="1" value="0.5000"' in live and "step 200 of 400" in live
            # an output that says nothing of how far the job is stays pretty JSON
            worker.progress(job_id, {"note": "<i>warming</i>"})
            live = ui.get(f"/ui/live/job/{ep}/{job_id}").json()["parts"]["job"]
            assert "<progress" not in live
            assert "&quot;note&quot;: &quot;&lt;i&gt;warming&lt;/i&gt;&quot;" in live
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("output", "shown"),
    [
        ({"percent": 42.5}, ("0.4250", "42%")),
        ({"progress": 0.25}, ("0.2500", "25%")),
        ({"progress": 60}, ("0.6000", "60%")),
        ({"step": 3, "total": 4}, ("0.7500", "75% · step 3 of 4")),
        ({"step": 9, "steps": 3}, ("1.0000", "100% · step 9 of 3")),
        ({"epoch": 1, "epochs": 4, "extra": [1, 2]}, ("0.2500", "epoch 1 of 4")),
    ],
)
def test_progress_keys_that_drive_a_bar(output: dict[str, object], shown: tuple[str, str]) -> None:
    html = render.progress_view(json.dumps(output))
    value, words = shown
    assert f'<progress max="1" value="{value}"' in html and words in html


@pytest.mark.parametrize(
    "output",
    [
        {"step": 3},
        {"step": 3, "total": 0},
        {"percent": True},
        {"step": "3", "total": "4"},
        [1, 2],
        "50%",
        {"progress": 10**400},
    ],
)
def test_outputs_without_a_bar_stay_json(output: object) -> None:
    html = render.progress_view(json.dumps(output))
    assert "<progress" not in html and html.startswith("<pre>")


def test_unserved_queues_are_marked(server: ServerProcess) -> None:
    never = new_endpoint("dp-never")
    served = new_endpoint("dp-served")
    worker = RawWorker(server, served, "w-dp")
    try:
        # a worker in touch before any submit, so no cached "unserved" answer lingers
        ping = worker.http.get(f"/{served}/ping/w-dp?gpu=local")
        assert ping.status_code == 200, ping.text
        submit_job(server, never, {"prompt": "<script>"})
        submit_job(server, served)
        with sign_in(server) as ui:
            page = ui.get("/").text
            assert "no worker has served this endpoint" in endpoint_row(page, never)
            assert "no worker has served" not in endpoint_row(page, served)
            live = ui.get("/ui/live/overview").json()["parts"]["endpoints"]
            assert "no worker has served this endpoint" in endpoint_row(live, never)
            listed = ui.get(f"/jobs?endpoint={never}").text
            assert f'data-unserved="{never}"' in listed
            assert "neuroq worker HANDLER --endpoint" in listed
            assert "data-unserved" not in ui.get(f"/jobs?endpoint={served}").text
    finally:
        worker.close()


def test_job_list_pages_match_the_json_route(server: ServerProcess) -> None:
    """The dashboard reads through job_list.read_page: the same jobs, order and next page."""
    ep = new_endpoint("dp-list")
    for i in range(27):
        submit_job(server, ep, {"n": i})
    with sign_in(server) as ui:
        for offset in (0, 25):
            page = ui.get(f"/jobs?endpoint={ep}&offset={offset}").text
            shown = re.findall(r'<tr data-job="([^"]+)"', page)
            api = httpx.get(
                f"{server.base_url}/jobs",
                params={"endpoint": ep, "limit": 25, "offset": offset},
                headers=server.client_headers,
            ).json()
            assert shown == [job["id"] for job in api["jobs"]]
            assert ('rel="next"' in page) == (api["nextOffset"] is not None)
