"""The dashboard over plain HTTP: sign-in, CSRF and origin checks, escaping, filters, paging,
the JSON request form's fields drawn from an endpoint's inputSchema, and the read-only store
queries behind it."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest
from dashstack import ServerProcess, csrf_of, sign_in, start_server, submit_job

from neuroq.jobs import JobStatus, NewJob, now_ms
from neuroq.store.sqlite import SQLiteStore


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("dash-http"))
    yield proc
    proc.stop()


def test_pages_need_a_session(server: ServerProcess) -> None:
    reply = httpx.get(f"{server.url}/jobs?status=FAILED")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/login?next=%2Fjobs%3Fstatus%3DFAILED"
    assert httpx.get(f"{server.url}/ui/live/overview").status_code == 401
    # the API key in a header does not open the dashboard, and vice versa
    assert httpx.get(f"{server.url}/", headers=server.client_headers).status_code == 303


def test_login_sets_a_strict_http_only_cookie_and_refuses_wrong_keys(server: ServerProcess) -> None:
    wrong = httpx.post(f"{server.url}/login", data={"key": "nope", "next": "/"})
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    assert "not valid" in wrong.text
    right = httpx.post(f"{server.url}/login", data={"key": server.api_key, "next": "//evil.test"})
    assert right.status_code == 303
    assert right.headers["location"] == "/"  # no open redirect
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert server.api_key.lower() not in cookie
    cross = httpx.post(
        f"{server.url}/login",
        data={"key": server.api_key},
        headers={"Origin": "http://evil.test", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403 and "set-cookie" not in cross.headers


def test_actions_need_the_csrf_token_and_same_origin(server: ServerProcess) -> None:
    job_id = submit_job(server, "dh-act", {})
    with sign_in(server) as ui:
        token = csrf_of(ui.get("/").text)
        body = {"endpoint_id": "dh-act", "job_id": job_id}
        assert ui.post("/ui/action/cancel", json=body).status_code == 403
        bad = ui.post("/ui/action/cancel", json=body, headers={"X-CSRF-Token": "0" * 64})
        assert bad.status_code == 403
        evil = {"X-CSRF-Token": token, "Origin": "http://evil.test"}
        assert ui.post("/ui/action/cancel", json=body, headers=evil).status_code == 403
        assert ui.get(f"/v2/dh-act/status/{job_id}").status_code == 401  # no key, no API
        ok = ui.post("/ui/action/cancel", json=body, headers={"X-CSRF-Token": token})
        assert ok.status_code == 200 and ok.json()["status"] == "CANCELLED"
        retry = ui.post("/ui/action/retry", json=body, headers={"X-CSRF-Token": token})
        assert retry.status_code == 409 and "cannot retry" in retry.json()["error"]
        missing = ui.post(
            "/ui/action/cancel", json={"endpoint_id": "dh-act"}, headers={"X-CSRF-Token": token}
        )
        assert missing.status_code == 400 and missing.json()["error"].startswith("job_id:")
        submit_job(server, "dh-act", {})
        purge = ui.post(
            "/ui/action/purge", json={"endpoint_id": "dh-act"}, headers={"X-CSRF-Token": token}
        )
        assert purge.json()["message"] == "Purged 1 queued job(s) of dh-act."


def test_logout_ends_the_session(server: ServerProcess) -> None:
    with sign_in(server) as ui:
        token = csrf_of(ui.get("/").text)
        assert ui.post("/logout", data={"csrf": "wrong"}).status_code == 403
        cookie = ui.cookies["neuroq_session"]
        assert ui.post("/logout", data={"csrf": token}).status_code == 303
        again = httpx.get(f"{server.url}/", cookies={"neuroq_session": cookie})
        assert again.status_code == 303  # the old token is revoked, not just forgotten


def test_untrusted_job_data_is_escaped(server: ServerProcess) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    job_id = submit_job(server, "dh-xss", {"prompt": evil})
    with sign_in(server) as ui:
        page = ui.get(f"/jobs/dh-xss/{job_id}")
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        # shown as text: escaped once, inside the pretty-printed JSON string
        assert html.escape(evil.replace('"', '\\"')) in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        live = ui.get(f"/ui/live/job/dh-xss/{job_id}").json()
        assert "<script>alert" not in live["parts"]["job"]


def test_job_list_filters_and_pages(server: ServerProcess) -> None:
    ids = [submit_job(server, "dh-page", {"n": i}) for i in range(30)]
    with sign_in(server) as ui:
        first = ui.get("/jobs?endpoint=dh-page").text
        assert first.count('<tr data-job="') == 25
        assert ids[-1] in first and ids[4] not in first  # newest first
        assert 'rel="next" href="/jobs?endpoint=dh-page&amp;offset=25"' in first
        second = ui.get("/jobs?endpoint=dh-page&offset=25").text
        assert second.count('<tr data-job="') == 5 and ids[0] in second
        assert ui.get("/jobs?endpoint=dh-page&status=COMPLETED").text.count("<tr data-job") == 0
        assert ui.get("/jobs?endpoint=dh-page&since=15m").text.count("<tr data-job") == 25
        bad = ui.get("/jobs?status=DONE")
        assert bad.status_code == 400 and "status: expected one of IN_QUEUE" in bad.text
        assert ui.get("/jobs?since=2y").status_code == 400
        assert ui.get("/jobs/dh-page/no-such-job").status_code == 404


def test_playground_validates_its_form(server: ServerProcess) -> None:
    with sign_in(server) as ui:
        headers = {"X-CSRF-Token": csrf_of(ui.get("/playground").text)}
        cases = [
            ({"endpoint_id": "bad id", "prompt": "x"}, "endpoint_id:"),
            ({"endpoint_id": "dh-pg", "prompt": " "}, "prompt:"),
            ({"endpoint_id": "dh-pg", "prompt": "x", "extra": "[1]"}, "extra:"),
            ({"endpoint_id": "dh-pg", "prompt": "x", "max_length": "0"}, "max_length:"),
        ]
        for body, field in cases:
            reply = ui.post("/ui/playground", json=body, headers=headers)
            assert reply.status_code == 400 and reply.json()["error"].startswith(field), body
        ok = ui.post(
            "/ui/playground",
            json={"endpoint_id": "dh-pg", "prompt": "hi", "max_length": "12", "extra": '{"a":1}'},
            headers=headers,
        ).json()
    status = httpx.get(
        f"{server.base_url}/dh-pg/status/{ok['id']}", headers=server.client_headers
    ).json()
    assert status["status"] == "IN_QUEUE"


def test_static_files_come_from_the_package(server: ServerProcess) -> None:
    """The script and stylesheet are package data (importlib.resources), served without a
    session: the login page needs them too."""
    static = resources.files("neuroq.api.dashboard").joinpath("static")
    for name, media_type in [("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")]:
        reply = httpx.get(f"{server.url}/ui/static/{name}")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith(media_type)
        assert reply.content == static.joinpath(name).read_bytes()
    assert httpx.get(f"{server.url}/ui/static/nope.js").status_code == 404


async def test_store_views(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "views.db")
    await store.open()
    try:
        t0 = now_ms()
        for i in range(3):
            await store.submit(NewJob("a", f'{{"n":{i}}}', id=f"a-{i}"), t0 + i)
        await store.submit(NewJob("b", "{}", id="b-0"), t0 - 3_600_000)
        (taken,) = await store.take("a", "w-1", 1, t0 + 10, lease_ms=60_000)
        await store.touch_worker("a", "w-1", t0 + 10)
        await store.touch_worker("b", "w-2", t0 + 10)
        newest = await store.list_jobs(now_ms=t0 + 20)
        assert [j.id for j in newest] == ["b-0", "a-2", "a-1", "a-0"]  # newest submission first
        assert [j.id for j in await store.list_jobs(limit=2, offset=1, now_ms=t0)] == [
            "a-2",
            "a-1",
        ]
        running = await store.list_jobs(status="IN_PROGRESS", now_ms=t0)
        assert [j.id for j in running] == [taken.id]
        assert [
            j.id for j in await store.list_jobs(since_ms=t0 - 60_000, endpoint_id="b", now_ms=t0)
        ] == []
        assert await store.job_counts(t0) == {
            "a": {JobStatus.IN_QUEUE.value: 2, JobStatus.IN_PROGRESS.value: 1},
            "b": {JobStatus.IN_QUEUE.value: 1},
        }
        workers = {w.worker_id: w for w in await store.list_workers()}
        assert workers["w-1"].held_job_ids == (taken.id,) and workers["w-2"].held_job_ids == ()
        found = await store.jobs_by_ids(["a-1", "b-0", "zzz"], t0)
        assert sorted(j.id for j in found) == ["a-1", "b-0"]
        assert await store.job_webhooks("a-1") == []
    finally:
        await store.close()


def test_json_request_form_sends_any_json_input(server: ServerProcess) -> None:
    with sign_in(server) as ui:
        page = ui.get("/playground").text
        assert 'id="json-request"' in page
        headers = {"X-CSRF-Token": csrf_of(page)}
        cases = [
            ({"endpoint_id": "bad id", "input": "{}"}, "endpoint_id:"),
            ({"endpoint_id": "dh-json", "input": " "}, "input:"),
            ({"endpoint_id": "dh-json", "input": '{"a": '}, "input: not valid JSON"),
            ({"endpoint_id": "dh-json", "input": '{"a": NaN}'}, "input.a:"),
        ]
        for body, field in cases:
            reply = ui.post("/ui/submit", json=body, headers=headers)
            assert reply.status_code == 400 and reply.json()["error"].startswith(field), body
        assert (
            ui.post("/ui/submit", json={"endpoint_id": "dh-json", "input": "1"}).status_code == 403
        )
        sent = {"prompt": "<b>hi</b>", "n": [1, 2.5, None], "deep": {"ok": True}}
        ok = ui.post(
            "/ui/submit",
            json={"endpoint_id": "dh-json", "input": json.dumps(sent)},
            headers=headers,
        ).json()
        assert ok["url"] == f"/jobs/dh-json/{ok['id']}"
    stored = httpx.get(
        f"{server.base_url}/dh-json/status/{ok['id']}", headers=server.client_headers
    ).json()
    assert stored["status"] == "IN_QUEUE"
    taken = httpx.get(
        f"{server.base_url}/dh-json/job-take/w-json", headers=server.worker_headers, timeout=30
    ).json()
    assert taken["id"] == ok["id"] and taken["input"] == sent


def test_playground_offers_the_handlers_limits(server: ServerProcess) -> None:
    """The NeuroQ handler caps max_length at 150 and prompts at 4,000 characters; the form
    offers no more and the server refuses more, before a worker would fail the job."""
    from neuroq.api.dashboard import forms
    from neuroq.handler import validation
    from neuroq.model.sampling import MAX_LENGTH_CAP

    assert forms.MAX_LENGTH_CAP == MAX_LENGTH_CAP == 150
    assert forms.MAX_PROMPT_CHARS == validation.MAX_PROMPT_CHARS
    with sign_in(server) as ui:
        page = ui.get("/playground").text
        assert f'name="max_length" type="number" min="1" max="{MAX_LENGTH_CAP}"' in page
        assert f'maxlength="{validation.MAX_PROMPT_CHARS}"' in page
        headers = {"X-CSRF-Token": csrf_of(page)}
        too_long = {"endpoint_id": "dh-pg", "prompt": "x", "max_length": MAX_LENGTH_CAP + 1}
        reply = ui.post("/ui/playground", json=too_long, headers=headers)
        assert reply.status_code == 400
        assert reply.json()["error"] == "max_length: expected a whole number from 1 to 150"
        longest = {"endpoint_id": "dh-pg", "prompt": "x", "max_length": MAX_LENGTH_CAP}
        assert ui.post("/ui/playground", json=longest, headers=headers).status_code == 200
        prompt = {"endpoint_id": "dh-pg", "prompt": "x" * (validation.MAX_PROMPT_CHARS + 1)}
        reply = ui.post("/ui/playground", json=prompt, headers=headers)
        assert reply.status_code == 400 and reply.json()["error"].startswith("prompt:")


def test_the_server_does_not_import_torch() -> None:
    """The playground's limits come from the handler without loading torch into the server."""
    import subprocess
    import sys

    code = "import neuroq.api.app, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


#: an inputSchema with a field of each kind, and markup in every string that reaches the page
HOSTILE_SCHEMA = {
    "type": "object",
    "description": "<script>alert('about')</script>",
    "properties": {
        "prompt": {"type": "string", "maxLength": 4000, "description": "<b>what</b> to say"},
        "name<img src=x>": {"type": "string", "default": '"><script>alert(1)</script>'},
        "n": {"type": "integer", "default": 3, "minimum": 1, "maximum": 9},
        "t": {"type": "number", "default": 0.5, "exclusiveMinimum": 0},
        "tone": {"type": "string", "enum": ["plain", "</option><script>x</script>"]},
        "flag": {"type": "boolean", "default": True},
        "tags": {"type": "array", "default": ["a"]},
        "extra": {"type": "object"},
    },
    "required": ["prompt"],
}


def test_json_request_form_draws_the_input_schema_fields(server: ServerProcess) -> None:
    reply = httpx.put(
        f"{server.url}/endpoints/dh-schema",
        json={"inputSchema": HOSTILE_SCHEMA},
        headers=server.client_headers,
    )
    assert reply.status_code == 201, reply.text
    with sign_in(server) as ui:
        page = ui.get("/playground").text
    assert '<option value="dh-schema"></option>' in page  # the endpoint is offered
    start = page.index('<fieldset class="schema-fields stack" data-schema-for="dh-schema" hidden')
    fields = page[start : page.index("</fieldset>", start)]
    assert "<script>" not in page and "<img src=x>" not in page and "<b>" not in page
    assert html.escape("<script>alert('about')</script>", quote=True) in fields
    props = re.findall(r'<label class="schema-field" data-prop="([^"]*)">', fields)
    assert props == [html.escape(name, quote=True) for name in HOSTILE_SCHEMA["properties"]]

    def field(name: str) -> str:
        match = re.search(rf'data-prop="{re.escape(name)}">(.*?)</label>', fields)
        assert match is not None, name
        return match.group(1)

    prompt = field("prompt")
    assert '<span class="required">required</span>' in prompt
    assert '<textarea rows="3" maxlength="4000" data-type="string" required>' in prompt
    assert "&lt;b&gt;what&lt;/b&gt; to say" in prompt
    named = field(html.escape("name<img src=x>", quote=True))
    assert f'value="{html.escape(chr(34) + "><script>alert(1)</script>", quote=True)}"' in named
    assert "required" not in named
    n = field("n")
    assert '<input type="number" step="1" min="1" max="9" value="3" data-type="integer">' in n
    assert "≥ 1, ≤ 9, default 3" in n
    assert 'step="any" value="0.5" data-type="number"' in field("t") and "&gt; 0" in field("t")
    tone = field("tone")
    assert '<select data-type="string"><option value="">(not set)</option>' in tone
    assert '<option value="&quot;plain&quot;">plain</option>' in tone
    assert "&lt;/option&gt;&lt;script&gt;x&lt;/script&gt;</option>" in tone
    assert '<input type="checkbox" data-type="boolean" checked>' in field("flag")
    assert '<textarea rows="2" spellcheck="false" placeholder="[ ... ]" data-type="array">' in (
        field("tags")
    )
    assert html.escape('["a"]') in field("tags")
    assert 'placeholder="{ ... }" data-type="object"></textarea>' in field("extra")
    # an endpoint without a schema has no fields: the form is the JSON text area alone
    assert 'data-schema-for="neuroq"' not in page
