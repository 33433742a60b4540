"""What the dashboard accepts from the browser: the job list's query, the sign-in form and the
JSON bodies of actions and the playground.

A bad value raises `FilterError` (query) or `BadInput` (body) with a message that starts with
the field it is about; the routes send that message back as it is. Bodies are read only up to a
limit, so an oversized upload is cut off instead of being held in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request

from neuroq import strict_json
from neuroq.jobs import JobStatus, is_path_safe

# The NeuroQ handler's own caps, so the playground offers what the handler accepts. From
# neuroq.model.commands, which restates the sampler's cap without importing torch: the server
# must not load torch to draw a form.
from neuroq.model.commands import MAX_LENGTH_CAP

#: jobs per page of the job list
PAGE_SIZE = 25
MAX_FORM_BYTES = 64 * 1024
#: neuroq.handler.validation.MAX_PROMPT_CHARS, restated for the same reason (a test holds them
#: equal); a longer prompt would only fail at the worker
MAX_PROMPT_CHARS = 4000
#: the JSON request form's input, as text; the client API takes larger bodies
MAX_JSON_INPUT_BYTES = 1024 * 1024
#: time filters of the job list: form value -> (label, window in ms; None = no bound)
SINCE_CHOICES: dict[str, tuple[str, int | None]] = {
    "": ("any time", None),
    "15m": ("last 15 min", 15 * 60_000),
    "1h": ("last hour", 3_600_000),
    "24h": ("last 24 h", 86_400_000),
}


@dataclass(frozen=True)
class JobFilter:
    """The job list's filter and page; `query` writes it back (with changes) for the pager links
    and the page's live URL."""

    endpoint_id: str | None
    status: str | None
    since: str
    offset: int

    def query(self, **changes: Any) -> str:
        values = {
            "endpoint": self.endpoint_id or "",
            "status": self.status or "",
            "since": self.since,
            "offset": self.offset,
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", 0)})


class FilterError(ValueError):
    """A bad query parameter of the job list; the message starts with its name."""


def parse_filter(request: Request) -> JobFilter:
    """The job list's query parameters; FilterError names the bad one."""
    params = request.query_params
    endpoint_id = params.get("endpoint", "").strip() or None
    if endpoint_id is not None and not is_path_safe(endpoint_id):
        raise FilterError("endpoint: use 1-128 characters of A-Z a-z 0-9 _ -")
    status = params.get("status", "").strip() or None
    if status is not None and status not in JobStatus.__members__:
        raise FilterError(f"status: expected one of {', '.join(JobStatus.__members__)}")
    since = params.get("since", "")
    if since not in SINCE_CHOICES:
        raise FilterError(f"since: expected one of {', '.join(k for k in SINCE_CHOICES if k)}")
    raw_offset = params.get("offset", "0") or "0"
    if not raw_offset.isdigit() or int(raw_offset) > 1_000_000:
        raise FilterError("offset: expected a whole number of jobs to skip, at most 1000000")
    return JobFilter(endpoint_id, status, since, int(raw_offset))


def safe_next(value: str | None) -> str:
    """Only a local path may be a post-login target (no `//host` or scheme: no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class BadInput(ValueError):
    """A bad field of a posted body; the message starts with the field's name."""


async def read_form(request: Request) -> dict[str, str]:
    """The first value of each field of a URL-encoded form, from at most MAX_FORM_BYTES (the
    sign-in and log-out forms are tiny)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            break
    fields = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


async def read_json_body(
    request: Request, limit: int = MAX_FORM_BYTES + MAX_PROMPT_CHARS * 4
) -> dict[str, Any]:
    """A posted JSON object, parsed strictly; refused once longer than `limit` bytes (by
    default the playground's largest possible form)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadInput("body: too large")
    try:
        value = strict_json.loads(body or b"{}", "body")
    except strict_json.JSONRejected as exc:
        raise BadInput(str(exc)) from None
    if not isinstance(value, dict):
        raise BadInput("body: expected a JSON object")
    return value


def field_id(body: dict[str, Any], name: str) -> str:
    """An endpoint or job id from a body, which must be path-safe like every id."""
    value = body.get(name)
    if not isinstance(value, str) or not is_path_safe(value):
        raise BadInput(f"{name}: expected 1-128 characters of A-Z a-z 0-9 _ -")
    return value


def build_generate_input(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Endpoint and job input from the playground form; BadInput names the bad field."""
    endpoint_id = field_id(body, "endpoint_id")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise BadInput("prompt: required, a non-empty text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise BadInput(f"prompt: at most {MAX_PROMPT_CHARS} characters")
    # The NeuroQ handler streams its pieces only when asked; other handlers ignore the flag.
    job_input: dict[str, Any] = {"stream": True}
    extra = body.get("extra")
    if isinstance(extra, str) and extra.strip():
        try:
            # Strict: a value only Python reads (1e309, NaN) would strand the job at delivery.
            extra = strict_json.loads(extra, "extra")
        except strict_json.JSONRejected as exc:
            # A path into the object comes without its root: "t: ..." is extra.t.
            where = "" if str(exc).startswith(("extra:", "extra[")) else "extra."
            raise BadInput(f"{where}{exc}") from None
    if extra not in (None, ""):
        if not isinstance(extra, dict):
            raise BadInput("extra: expected a JSON object")
        job_input.update(extra)
    job_input.update({"action": "generate", "prompt": prompt})
    max_length = body.get("max_length")
    if max_length not in (None, ""):
        if isinstance(max_length, str) and max_length.strip().isdigit():
            max_length = int(max_length)
        if (
            not isinstance(max_length, int)
            or isinstance(max_length, bool)
            or not 1 <= max_length <= MAX_LENGTH_CAP
        ):
            raise BadInput(f"max_length: expected a whole number from 1 to {MAX_LENGTH_CAP}")
        job_input["max_length"] = max_length
    return endpoint_id, job_input


def build_json_input(body: dict[str, Any]) -> tuple[str, str]:
    """Endpoint and job input (as compact JSON text) from the JSON request form, whose `input`
    is the text typed in; any JSON value is a valid input. BadInput names the bad field."""
    endpoint_id = field_id(body, "endpoint_id")
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadInput('input: required, a JSON value such as {"prompt": "hi"}')
    if len(text.encode()) > MAX_JSON_INPUT_BYTES:
        raise BadInput(f"input: at most {MAX_JSON_INPUT_BYTES} bytes here; use the API for more")
    try:
        # Strict, as the client API is: a value only Python reads (NaN, 1e309) is refused.
        value = strict_json.loads(text, "input")
    except strict_json.JSONRejected as exc:
        # A path into the value comes without its root: "a: ..." is input.a.
        where = "" if str(exc).startswith(("input:", "input[")) else "input."
        raise BadInput(f"{where}{exc}") from None
    return endpoint_id, json.dumps(value, ensure_ascii=False, separators=(",", ":"))
