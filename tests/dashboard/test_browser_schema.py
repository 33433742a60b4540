"""In Chromium, at a phone's width (390 px) and a desktop's (1280 px): the JSON request form of an
endpoint whose settings declare an inputSchema. Choosing the endpoint shows a field per
property (defaults filled in, the JSON gaining them); filling the fields writes the JSON, and
JSON typed fills the fields; a required field left empty blocks the send; the job a raw HTTP
worker takes has exactly the input filled in, and its output shows; the NeuroQ handler's
shipped schema makes an input the handler accepts. Nothing is wider than the screen. Uses
test_browser's fixtures on a server with no worker of its own."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import test_browser
import test_browser_progress
from dashstack import Stack
from harness import RawWorker, new_endpoint
from test_browser import assert_within_viewport, horizontal_overflow, screenshot

# test_browser's browser and test_browser_progress's server-only stack and signed-in tab at each
# width, bound to their names here so that pytest finds them in this module
browser = test_browser.browser
stack = test_browser_progress.stack
tab = test_browser_progress.tab

SCHEMA: dict[str, Any] = {
    "required": ["prompt"],
    "properties": {
        "flag": {"type": "boolean"},
        "prompt": {"type": "string", "description": "What to answer."},
        "tags": {"type": "array"},
        "n": {"type": "integer", "default": 2, "minimum": 1, "maximum": 9},
        "tone": {"type": "string", "enum": ["plain", "formal"]},
    },
}


def configured(stack: Stack, schema: dict[str, Any] = SCHEMA) -> str:
    """A new endpoint with `schema` and no handler (the scaler starts nothing for it)."""
    ep = new_endpoint("bs")
    reply = httpx.put(
        f"{stack.server.url}/endpoints/{ep}",
        json={"inputSchema": schema},
        headers=stack.server.client_headers,
    )
    assert reply.status_code == 201, reply.text
    return ep


def typed_json(form: Any) -> Any:
    return json.loads(form.locator("textarea[name=input]").input_value())


def test_schema_fields_fill_the_json_and_the_job(tab: Any, stack: Stack, tmp_path: Path) -> None:
    ep = configured(stack)
    tab.goto("/playground")
    form = tab.locator("#json-request")
    fields = form.locator(f'fieldset[data-schema-for="{ep}"]')
    assert fields.is_hidden()
    form.locator("input[name=endpoint_id]").fill(ep)
    fields.wait_for(state="visible")
    # the example's keys fill the fields; the fields' defaults join the JSON
    example = typed_json(form)
    assert example["prompt"] == "Hello" and example["n"] == 2 and "flag" not in example
    assert fields.locator('[data-prop="prompt"] [data-type]').input_value() == "Hello"
    assert fields.locator('[data-prop="flag"] input').evaluate("el => el.indeterminate")

    form.locator("textarea[name=input]").fill("{}")
    prompt = fields.locator('[data-prop="prompt"] input')
    assert prompt.input_value() == ""
    assert fields.locator('[data-prop="n"] input').input_value() == ""
    prompt.fill("hi <there>")
    fields.locator('[data-prop="n"] input').fill("7")
    fields.locator('[data-prop="tone"] select').select_option(label="formal")
    fields.locator('[data-prop="flag"] input').check()
    fields.locator('[data-prop="tags"] textarea').fill('["x", "y"]')
    filled = {"prompt": "hi <there>", "n": 7, "tone": "formal", "flag": True, "tags": ["x", "y"]}
    assert typed_json(form) == filled
    # JSON typed sets the fields
    form.locator("textarea[name=input]").fill(json.dumps({**filled, "n": 5}))
    assert fields.locator('[data-prop="n"] input').input_value() == "5"
    filled["n"] = 5
    # an emptied required field blocks the send
    prompt.fill("")
    assert "prompt" not in typed_json(form)
    assert not form.evaluate("el => el.checkValidity()")
    prompt.fill("hi <there>")
    assert typed_json(form) == filled and form.evaluate("el => el.checkValidity()")

    for part in (fields, form.locator("textarea[name=input]"), form.locator("button")):
        assert_within_viewport(tab, part, "the schema form")
    assert horizontal_overflow(tab) <= 0
    screenshot(tab, f"json-schema-{tab.viewport_size['width']}", tmp_path)

    form.locator("button[type=submit]").click()
    worker = RawWorker(stack.server, ep)
    try:
        job = worker.take()
        assert job["input"] == filled
        worker.done(job["id"], {"output": {"echo": job["input"]}})
    finally:
        worker.close()
    tab.locator("#json-status", has_text="COMPLETED").wait_for()
    assert tab.locator("#json-job").inner_text() == job["id"]
    assert json.loads(tab.locator("#json-output").inner_text()) == {"echo": filled}


def test_the_neuroq_handlers_schema_makes_an_input_it_accepts(
    tab: Any, stack: Stack, tmp_path: Path
) -> None:
    """neuroq/handler/input_schema.json declared on an endpoint: its form's defaults and a
    prompt make an input that the handler's validation accepts, the same request as the prompt
    alone."""
    from neuroq.handler.validation import validate

    shipped = json.loads(
        resources.files("neuroq.handler").joinpath("input_schema.json").read_text("utf-8")
    )
    ep = configured(stack, shipped)
    tab.goto("/playground")
    form = tab.locator("#json-request")
    form.locator("textarea[name=input]").fill("{}")
    form.locator("input[name=endpoint_id]").fill(ep)
    fields = form.locator(f'fieldset[data-schema-for="{ep}"]')
    fields.wait_for(state="visible")
    assert fields.locator("label[data-prop]").count() == len(shipped["properties"])
    fields.locator('[data-prop="prompt"] textarea').fill("Hello there")
    sent = typed_json(form)
    defaults = {n: p["default"] for n, p in shipped["properties"].items() if "default" in p}
    assert sent == {**defaults, "prompt": "Hello there"}
    assert validate(sent) == validate({"prompt": "Hello there"})
    assert horizontal_overflow(tab) <= 0
    screenshot(tab, f"json-schema-neuroq-{tab.viewport_size['width']}", tmp_path)
