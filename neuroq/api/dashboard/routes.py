"""The web dashboard served by `neuroq serve` at `/`.

Pages are rendered here as HTML; `dashboard/static/dashboard.js` (plain JS, no build step, no
CDN) keeps them live. Every page names a live URL: the script long-polls it with the version it
last saw, the server holds the request until the data changed (an `Activity.changes` or job
topic moved) or `LIVE_HOLD_S` passed, and answers with freshly rendered fragments that replace
the page's `id`-named parts. Rendering happens only here, so escaping happens only here: every
value that comes from a job (ids, inputs, outputs, errors, chunks) goes through `h()`.

Sign-in sessions, CSRF tokens and the same-site check live in `sessions`.

Routes: `/`, `/jobs`, `/jobs/{endpoint_id}/{job_id}`, `/playground` (pages), `/login`, `/logout`,
and under `/ui/`: `live/...` (fragments), `action/{cancel|retry|purge}`, `playground` (submit),
`stream/{endpoint_id}/{job_id}` (server-sent events), `static/...`.
"""

from __future__ import annotations

import html
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route

from neuroq.api import sse
from neuroq.api.activity import JOBS_CHANGED, Activity
from neuroq.api.auth import Keys
from neuroq.api.dashboard.forms import (
    PAGE_SIZE,
    SINCE_CHOICES,
    BadInput,
    FilterError,
    JobFilter,
    build_generate_input,
    field_id,
    parse_filter,
    read_form,
    read_json_body,
    safe_next,
)
from neuroq.api.dashboard.history import PLOT_WINDOW_MS, History
from neuroq.api.dashboard.sessions import SESSION_COOKIE, SESSION_TTL_S, Sessions, same_site
from neuroq.api.metrics import Metrics, worker_state
from neuroq.config import Settings
from neuroq.jobs import Job, JobStatus, NewJob, is_path_safe, new_job_id, now_ms
from neuroq.store.base import InvalidTransition, JobStore, job_topic

log = logging.getLogger("neuroq.dashboard")

#: longest a live request is held when nothing changes (bounds staleness of heartbeat ages)
LIVE_HOLD_S = 5.0
#: at most this many stream chunks are shown on a job page (the newest)
CHUNKS_SHOWN = 500
_STATIC = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}
_SECURITY_HEADERS = {
    # No inline script or style anywhere, so the policy can forbid them outright: an output
    # that slipped past escaping still could not run.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self';"
    " base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
_STATUS_CLASS = {s: s.value.lower().replace("_", "-") for s in JobStatus}


def h(value: object) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return html.escape(str(value), quote=True)


# -- state shared by the routes ------------------------------------------------------------------


@dataclass
class Dashboard:
    settings: Settings
    store: JobStore
    metrics: Metrics
    activity: Activity
    sessions: Sessions
    history: History
    static: dict[str, bytes]
    #: tags live versions, so a page that saw another server process never looks up to date
    instance: str = field(default_factory=lambda: secrets.token_hex(4))


def _dash(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _session(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    return token if _dash(request).sessions.valid(token) else None


# -- formatting ----------------------------------------------------------------------------------


def fmt_time(at_ms: int | None) -> str:
    if at_ms is None:
        return "—"
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return (
        f'<time datetime="{moment.isoformat()}" title="{moment:%Y-%m-%d %H:%M:%S} UTC">'
        f"{moment:%H:%M:%S}</time>"
    )


def fmt_duration(ms: int | float | None) -> str:
    if ms is None:
        return "—"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    if ms < 3_600_000:
        return f"{ms / 60_000:.1f} min"
    return f"{ms / 3_600_000:.1f} h"


def fmt_ago(at_ms: int, now: int) -> str:
    return f"{fmt_duration(max(0, now - at_ms))} ago"


def badge(status: JobStatus | str) -> str:
    status = JobStatus(status)
    return f'<span class="badge status-{_STATUS_CLASS[status]}">{h(status.value)}</span>'


def pretty_json(text: str | None) -> str:
    """Indented JSON in a <pre>, escaped; text that is not JSON is shown as it is."""
    if text is None:
        return '<p class="muted">none</p>'
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        shown = text
    return f"<pre>{h(shown)}</pre>"


def job_url(endpoint_id: str, job_id: str) -> str:
    return f"/jobs/{quote(endpoint_id, safe='')}/{quote(job_id, safe='')}"


def action_button(
    action: str, label: str, endpoint_id: str, job_id: str = "", *, danger: bool = False
) -> str:
    subject = f"job {job_id}" if job_id else f"every queued job of endpoint {endpoint_id}"
    confirm = f"{label} {subject}?"
    return (
        f'<button type="button" class="{"danger" if danger else "secondary"}"'
        f' data-action="{h(action)}" data-endpoint="{h(endpoint_id)}" data-job="{h(job_id)}"'
        f' data-confirm="{h(confirm)}">{h(label)}</button>'
    )


# -- plots ---------------------------------------------------------------------------------------

_PLOT_W, _PLOT_H, _PAD = 600, 150, 22


def svg_plot(points: list[tuple[int, float]], now: int, title: str, unit: str) -> str:
    """A line chart of `points` (at_ms, value) over the last hour, as inline SVG."""
    top = max((v for _, v in points), default=0.0)
    scale = top if top > 0 else 1.0
    start = now - PLOT_WINDOW_MS

    def xy(at_ms: int, value: float) -> str:
        x = (at_ms - start) / PLOT_WINDOW_MS * _PLOT_W
        y = _PAD + (1 - value / scale) * (_PLOT_H - 2 * _PAD)
        return f"{max(0.0, x):.1f},{y:.1f}"

    shown = [(t, v) for t, v in points if t >= start]
    line = " ".join(xy(t, v) for t, v in shown)
    base_y = _PLOT_H - _PAD
    area = ""
    if len(shown) >= 2:
        area = f'<polygon class="area" points="{xy(shown[0][0], 0)} {line} {xy(shown[-1][0], 0)}"/>'
    latest = f"{shown[-1][1]:.3g}" if shown else "no data yet"
    return (
        f'<figure class="plot"><figcaption>{h(title)} <span class="muted">now {h(latest)}'
        f" {h(unit)}</span></figcaption>"
        f'<svg viewBox="0 0 {_PLOT_W} {_PLOT_H}" role="img"'
        f' aria-label="{h(title)} over the last hour">'
        f'<line class="axis" x1="0" y1="{base_y}" x2="{_PLOT_W}" y2="{base_y}"/>'
        f'<line class="grid" x1="0" y1="{_PAD}" x2="{_PLOT_W}" y2="{_PAD}"/>'
        f'<text x="4" y="{_PAD - 6}">{h(f"{top:.3g}")} {h(unit)}</text>'
        f'<text x="4" y="{_PLOT_H - 6}">−60 min</text>'
        f'<text x="{_PLOT_W - 4}" y="{_PLOT_H - 6}" text-anchor="end">now</text>'
        f"{area}"
        + (f'<polyline class="line" points="{line}"/>' if line else "")
        + "</svg></figure>"
    )


def plots(history: History, metrics: Metrics, counts: dict[str, dict[str, int]], now: int) -> str:
    return svg_plot(history.depth(counts, now), now, "Queue depth", "jobs") + svg_plot(
        history.throughput(metrics, now), now, "Throughput", "jobs/min"
    )


# -- page frame ----------------------------------------------------------------------------------


def page(
    request: Request, title: str, body: str, *, live: str | None = None, status_code: int = 200
) -> HTMLResponse:
    token = request.cookies.get(SESSION_COOKIE)
    signed_in = token is not None and _dash(request).sessions.valid(token)
    csrf = _dash(request).sessions.csrf(token) if signed_in and token else ""
    nav = ""
    if signed_in:
        links = [("/", "Overview"), ("/jobs", "Jobs"), ("/playground", "Playground")]
        path = request.url.path
        items = "".join(
            f'<a href="{href}"{" aria-current=page" if path == href else ""}>{label}</a>'
            for href, label in links
        )
        nav = (
            f"<nav>{items}"
            f'<form method="post" action="/logout"><input type="hidden" name="csrf"'
            f' value="{h(csrf)}"><button class="link" type="submit">Log out</button></form></nav>'
        )
    live_attr = f' data-live="{h(live)}"' if live else ""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{h(csrf)}">'
        f"<title>{h(title)} · NeuroQ</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/dashboard.css">'
        '<script src="/ui/static/dashboard.js" defer></script></head>'
        f'<body{live_attr}><header><a class="brand" href="/">NeuroQ</a>{nav}</header>'
        f'<main><div id="flash" role="status" aria-live="polite"></div>{body}</main>'
        "</body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=_SECURITY_HEADERS)


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _unauthorized() -> Response:
    return JSONResponse({"error": "not signed in: log in to the dashboard again"}, 401)


Handler = Callable[[Request], Awaitable[Response]]


def signed_in_page(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        if _session(request) is None:
            return _login_redirect(request)
        return await handler(request)

    return wrapped


def signed_in_api(handler: Handler, *, changes_state: bool = False) -> Handler:
    async def wrapped(request: Request) -> Response:
        token = _session(request)
        if token is None:
            return _unauthorized()
        if changes_state:
            presented = request.headers.get("x-csrf-token")
            if not same_site(request) or not _dash(request).sessions.csrf_ok(token, presented):
                return JSONResponse(
                    {"error": "refused: missing or wrong CSRF token, or a cross-site request"},
                    403,
                )
        return await handler(request)

    return wrapped


# -- sign in and out -----------------------------------------------------------------------------


def _loginread_form(
    request: Request, next_path: str, error: str = "", status_code: int = 200
) -> HTMLResponse:
    message = f'<p class="error" role="alert">{h(error)}</p>' if error else ""
    body = (
        '<section class="card narrow"><h1>Sign in</h1>'
        "<p>Use a client API key of this server (<code>NEUROQ_API_KEYS</code>, or the key"
        " generated into the data directory).</p>"
        f'{message}<form method="post" action="/login" class="stack">'
        f'<input type="hidden" name="next" value="{h(next_path)}">'
        '<label>API key <input type="password" name="key" autocomplete="current-password"'
        ' required autofocus></label><button type="submit">Sign in</button></form></section>'
    )
    return page(request, "Sign in", body, status_code=status_code)


async def login(request: Request) -> Response:
    if request.method == "GET":
        return _loginread_form(request, safe_next(request.query_params.get("next")))
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    if not same_site(request):
        return _loginread_form(
            request, next_path, "Refused: the form was posted from another site.", 403
        )
    token = _dash(request).sessions.login(form.get("key", "").strip())
    if token is None:
        log.warning("dashboard sign-in refused: wrong API key")
        return _loginread_form(request, next_path, "That API key is not valid.", 401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    form = await read_form(request)
    token = request.cookies.get(SESSION_COOKIE)
    sessions = _dash(request).sessions
    if not same_site(request) or not sessions.csrf_ok(token, form.get("csrf")):
        return page(
            request,
            "Sign out",
            '<p class="error">Refused: stale or cross-site form.</p>',
            status_code=403,
        )
    sessions.logout(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# -- overview ------------------------------------------------------------------------------------


async def overview_parts(request: Request) -> dict[str, str]:
    dash = _dash(request)
    now = now_ms()
    counts = await dash.store.job_counts(now)
    workers = await dash.store.list_workers()
    endpoints = sorted(set(counts) | {w.endpoint_id for w in workers})
    rows = []
    for ep in endpoints:
        c = counts.get(ep, {})
        n_workers = sum(1 for w in workers if w.endpoint_id == ep)
        cells = [
            f'<td><a href="/jobs?{urlencode({"endpoint": ep})}">{h(ep)}</a></td>',
            f'<td class="num" data-col="queued">{c.get("IN_QUEUE", 0)}</td>',
            f'<td class="num" data-col="running">{c.get("IN_PROGRESS", 0)}</td>',
        ]
        for status in ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"):
            rate = dash.history.rate_per_min(dash.metrics, ep, status, now)
            cells.append(
                f'<td class="num" data-col="{status.lower()}">{c.get(status, 0)}'
                f"<small>{rate:.1f}/min</small></td>"
            )
        cells.append(f'<td class="num">{n_workers}</td>')
        cells.append(f"<td>{action_button('purge', 'Purge queue', ep, danger=True)}</td>")
        rows.append(f'<tr data-endpoint="{h(ep)}">{"".join(cells)}</tr>')
    endpoints_html = (
        '<div class="scroll"><table><thead><tr><th>Endpoint</th><th>Queued</th><th>Running</th>'
        "<th>Completed</th><th>Failed</th><th>Cancelled</th><th>Timed out</th><th>Workers</th>"
        f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
        if rows
        else '<p class="muted">No jobs or workers yet.</p>'
    )
    worker_rows = []
    for w in workers:
        jobs = " ".join(
            f'<a href="{h(job_url(w.endpoint_id, j))}">{h(j)}</a>' for j in w.held_job_ids
        )
        state = worker_state(w)
        worker_rows.append(
            f'<tr data-worker="{h(w.worker_id)}"><td>{h(w.worker_id)}</td>'
            f"<td>{h(w.endpoint_id)}</td>"
            f'<td><span class="badge state-{h(state)}">{h(state)}</span></td>'
            f'<td class="ids">{jobs or "—"}</td><td>{fmt_ago(w.last_seen_ms, now)}</td></tr>'
        )
    workers_html = (
        '<div class="scroll"><table><thead><tr><th>Worker</th><th>Endpoint</th><th>State</th>'
        "<th>Current jobs</th><th>Last heartbeat</th></tr></thead>"
        f"<tbody>{''.join(worker_rows)}</tbody></table></div>"
        if worker_rows
        else '<p class="muted">No worker has been in touch recently.</p>'
    )
    return {
        "endpoints": endpoints_html,
        "workers": workers_html,
        "plots": plots(dash.history, dash.metrics, counts, now),
    }


@signed_in_page
async def overview(request: Request) -> Response:
    parts = await overview_parts(request)
    body = (
        '<section class="card"><h1>Endpoints</h1>'
        f'<div id="endpoints">{parts["endpoints"]}</div></section>'
        '<section class="card"><h2>Last hour</h2>'
        f'<div id="plots" class="plots">{parts["plots"]}</div></section>'
        '<section class="card"><h2>Workers</h2>'
        f'<div id="workers">{parts["workers"]}</div></section>'
    )
    return page(request, "Overview", body, live="/ui/live/overview")


# -- job list ------------------------------------------------------------------------------------


def _job_row(job: Job) -> str:
    return (
        f'<tr data-job="{h(job.id)}">'
        f'<td class="ids"><a href="{h(job_url(job.endpoint_id, job.id))}">'
        f"{h(job.id)}</a></td><td>{h(job.endpoint_id)}</td><td>{badge(job.status)}</td>"
        f"<td>{fmt_time(job.created_at_ms)}</td><td>{fmt_duration(job.delay_time_ms)}</td>"
        f'<td>{fmt_duration(job.execution_time_ms)}</td><td class="num">{job.retries}</td></tr>'
    )


async def jobs_parts(request: Request, filt: JobFilter) -> dict[str, str]:
    dash = _dash(request)
    now = now_ms()
    window = SINCE_CHOICES[filt.since][1]
    jobs = await dash.store.list_jobs(
        endpoint_id=filt.endpoint_id,
        status=filt.status,
        since_ms=0 if window is None else now - window,
        limit=PAGE_SIZE + 1,
        offset=filt.offset,
        now_ms=now,
    )
    has_next = len(jobs) > PAGE_SIZE
    jobs = jobs[:PAGE_SIZE]
    if jobs:
        table = (
            '<div class="scroll"><table><thead><tr><th>Job</th><th>Endpoint</th><th>Status</th>'
            "<th>Created (UTC)</th><th>Delay</th><th>Execution</th><th>Retries</th></tr></thead>"
            f"<tbody>{''.join(_job_row(j) for j in jobs)}</tbody></table></div>"
        )
    else:
        table = '<p class="muted">No job matches.</p>'
    pager = []
    if filt.offset > 0:
        prev = filt.query(offset=max(0, filt.offset - PAGE_SIZE))
        pager.append(f'<a rel="prev" href="/jobs?{h(prev)}">← Newer</a>')
    if jobs:
        pager.append(f'<span class="muted">{filt.offset + 1}–{filt.offset + len(jobs)}</span>')
    if has_next:
        older = filt.query(offset=filt.offset + PAGE_SIZE)
        pager.append(f'<a rel="next" href="/jobs?{h(older)}">Older →</a>')
    return {"jobs": table + f'<div class="pager">{" ".join(pager)}</div>'}


def _select(name: str, label: str, options: list[tuple[str, str]], current: str) -> str:
    opts = "".join(
        f'<option value="{h(v)}"{" selected" if v == current else ""}>{h(text)}</option>'
        for v, text in options
    )
    return f'<label>{h(label)} <select name="{h(name)}">{opts}</select></label>'


@signed_in_page
async def jobs_page(request: Request) -> Response:
    try:
        filt = parse_filter(request)
    except FilterError as exc:
        return page(request, "Jobs", f'<p class="error" role="alert">{h(exc)}</p>', status_code=400)
    counts = await _dash(request).store.job_counts(now_ms())
    endpoints = sorted(set(counts) | ({filt.endpoint_id} if filt.endpoint_id else set()))
    form = (
        '<form method="get" action="/jobs" class="filters">'
        + _select(
            "endpoint",
            "Endpoint",
            [("", "all")] + [(e, e) for e in endpoints],
            filt.endpoint_id or "",
        )
        + _select(
            "status",
            "Status",
            [("", "all")] + [(s, s) for s in JobStatus.__members__],
            filt.status or "",
        )
        + _select("since", "Created", [(k, v[0]) for k, v in SINCE_CHOICES.items()], filt.since)
        + '<button type="submit">Filter</button></form>'
    )
    parts = await jobs_parts(request, filt)
    body = (
        f'<section class="card"><h1>Jobs</h1>{form}<div id="jobs">{parts["jobs"]}</div></section>'
    )
    return page(request, "Jobs", body, live=f"/ui/live/jobs?{filt.query()}")


# -- job page ------------------------------------------------------------------------------------


def _chunk_list(chunks: list[tuple[int, str]]) -> str:
    if not chunks:
        return '<p class="muted">none</p>'
    shown = chunks[-CHUNKS_SHOWN:]
    note = (
        f'<p class="muted">showing the last {len(shown)} of {len(chunks)}</p>'
        if len(shown) < len(chunks)
        else ""
    )
    items = "".join(f'<li value="{seq}"><code>{h(chunk)}</code></li>' for seq, chunk in shown)
    return f'{note}<ol class="chunks">{items}</ol>'


async def job_parts(request: Request, endpoint_id: str, job_id: str) -> dict[str, str] | None:
    dash = _dash(request)
    result = await dash.store.read_stream(endpoint_id, job_id, after_seq=0)
    if result is None:
        return None
    job, chunks = result
    now = now_ms()
    actions = []
    if not job.status.is_terminal:
        actions.append(action_button("cancel", "Cancel", endpoint_id, job_id, danger=True))
    if job.status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
        actions.append(action_button("retry", "Retry", endpoint_id, job_id))
    facts = [
        ("Status", badge(job.status)),
        (
            "Endpoint",
            f'<a href="/jobs?{h(urlencode({"endpoint": endpoint_id}))}">{h(endpoint_id)}</a>',
        ),
        ("Worker", h(job.worker_id) if job.worker_id else "—"),
        ("Created", fmt_time(job.created_at_ms)),
        ("Started", fmt_time(job.started_at_ms)),
        ("Finished", fmt_time(job.finished_at_ms)),
        ("Delay", fmt_duration(job.delay_time_ms)),
        (
            "Execution",
            fmt_duration(job.execution_time_ms)
            if job.execution_time_ms is not None or job.started_at_ms is None
            else f"{fmt_duration(now - job.started_at_ms)} so far",
        ),
        ("Retries", str(job.retries)),
        (
            "Timeouts",
            f"execution {fmt_duration(job.policy.execution_timeout_ms)},"
            f" ttl {fmt_duration(job.policy.ttl_ms)}",
        ),
        ("Webhook", h(urlsplit(job.webhook).netloc) if job.webhook else "—"),
    ]
    facts_html = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    if job.status is JobStatus.IN_PROGRESS:
        result_html = f"<h2>Progress</h2>{pretty_json(job.output_json)}"
    elif job.error_json is not None:
        result_html = f'<h2>Error</h2><div class="error-box">{pretty_json(job.error_json)}</div>'
    elif job.status.is_terminal:
        result_html = f"<h2>Output</h2>{pretty_json(job.output_json)}"
    else:
        result_html = '<h2>Output</h2><p class="muted">not started yet</p>'
    pending = await dash.store.job_webhooks(job_id)
    attempts = dash.activity.webhook_attempts(job_id)
    hook_items = [
        f"<li>attempt {a.attempt} at {fmt_time(a.at_ms)}: "
        f"{'delivered' if a.ok else 'failed, gave up' if a.final else 'failed, will retry'}</li>"
        for a in attempts
    ] + [
        f"<li>pending: {d.attempts} attempt(s) made, next at {fmt_time(d.next_attempt_at_ms)}</li>"
        for d in pending
    ]
    hooks = f"<ul>{''.join(hook_items)}</ul>" if hook_items else '<p class="muted">none</p>'
    return {
        "job": (
            f'<div class="actions">{"".join(actions)}</div>'
            f'<dl class="facts">{facts_html}</dl>{result_html}'
            f"<h2>Input</h2>{pretty_json(job.input_json)}"
            f"<h2>Stream chunks ({len(chunks)})</h2>{_chunk_list(chunks)}"
            f"<h2>Webhook deliveries</h2>{hooks}"
        )
    }


def _job_path(request: Request) -> tuple[str, str] | None:
    endpoint_id = request.path_params["endpoint_id"]
    job_id = request.path_params["job_id"]
    if not is_path_safe(endpoint_id) or not is_path_safe(job_id):
        return None
    return endpoint_id, job_id


def _job_missing(request: Request) -> HTMLResponse:
    return page(
        request,
        "Job not found",
        '<section class="card"><h1>Job not found</h1><p>It is unknown, or was deleted after'
        ' its retention ran out.</p><p><a href="/jobs">All jobs</a></p></section>',
        status_code=404,
    )


@signed_in_page
async def job_page(request: Request) -> Response:
    ids = _job_path(request)
    parts = None if ids is None else await job_parts(request, *ids)
    if ids is None or parts is None:
        return _job_missing(request)
    endpoint_id, job_id = ids
    body = (
        f'<section class="card"><h1 class="ids">Job {h(job_id)}</h1>'
        f'<div id="job">{parts["job"]}</div></section>'
    )
    return page(
        request, f"Job {job_id}", body, live=f"/ui/live/job/{quote(endpoint_id)}/{quote(job_id)}"
    )


# -- live fragments ------------------------------------------------------------------------------


async def _hold(request: Request, topic: str, store_topic: bool) -> str:
    """Wait until `topic` moves past the version the page last saw (`?v=`), at most
    LIVE_HOLD_S; return the version to render with. An absent `v`, or one from another server
    process (a restart), answers at once."""
    dash = _dash(request)
    notifier = dash.store.notifier if store_topic else dash.activity.changes
    prefix = f"{dash.instance}-"
    seen = request.query_params.get("v", "")
    if seen.startswith(prefix) and seen[len(prefix) :].isdigit():
        await notifier.wait(topic, int(seen[len(prefix) :]), LIVE_HOLD_S)
    return f"{prefix}{notifier.version(topic)}"


def _live(version: str, parts: dict[str, str]) -> JSONResponse:
    return JSONResponse({"v": version, "parts": parts}, headers={"Cache-Control": "no-store"})


async def live_overview(request: Request) -> Response:
    version = await _hold(request, JOBS_CHANGED, store_topic=False)
    return _live(version, await overview_parts(request))


async def live_jobs(request: Request) -> Response:
    try:
        filt = parse_filter(request)
    except FilterError as exc:
        return JSONResponse({"error": str(exc)}, 400)
    version = await _hold(request, JOBS_CHANGED, store_topic=False)
    return _live(version, await jobs_parts(request, filt))


async def live_job(request: Request) -> Response:
    ids = _job_path(request)
    if ids is None:
        return JSONResponse({"error": "job not found"}, 404)
    version = await _hold(request, job_topic(ids[1]), store_topic=True)
    parts = await job_parts(request, *ids)
    if parts is None:
        return JSONResponse({"error": f"job {ids[1]} not found (deleted after retention?)"}, 404)
    return _live(version, parts)


# -- actions -------------------------------------------------------------------------------------


async def action(request: Request) -> Response:
    name = request.path_params["name"]
    dash = _dash(request)
    try:
        body = await read_json_body(request)
        endpoint_id = field_id(body, "endpoint_id")
        if name == "purge":
            removed = await dash.store.purge_queue(endpoint_id, now_ms())
            log.info(
                "dashboard purged %d queued job(s)", removed, extra={"endpoint_id": endpoint_id}
            )
            return JSONResponse({"message": f"Purged {removed} queued job(s) of {endpoint_id}."})
        job_id = field_id(body, "job_id")
        if name == "cancel":
            job = await dash.store.cancel(endpoint_id, job_id, now_ms())
        elif name == "retry":
            job = await dash.store.retry(endpoint_id, job_id, now_ms())
        else:
            return JSONResponse({"error": f"unknown action {name!r}: cancel, retry or purge"}, 404)
    except BadInput as exc:
        return JSONResponse({"error": str(exc)}, 400)
    except InvalidTransition as exc:
        return JSONResponse({"error": str(exc)}, 409)
    if job is None:
        return JSONResponse({"error": f"job {job_id} not found"}, 404)
    log.info(
        "dashboard %s: job now %s",
        name,
        job.status.value,
        extra={"job_id": job_id, "endpoint_id": endpoint_id},
    )
    return JSONResponse(
        {"message": f"Job {job_id} is {job.status.value}.", "status": job.status.value}
    )


# -- playground ----------------------------------------------------------------------------------


@signed_in_page
async def playground_page(request: Request) -> Response:
    body = (
        '<section class="card"><h1>Playground</h1>'
        "<p>Submits a <code>generate</code> job and shows the text as the worker streams it.</p>"
        '<form id="playground" class="stack">'
        '<label>Endpoint <input name="endpoint_id" value="neuroq" required'
        ' pattern="[A-Za-z0-9_\\-]{1,128}"></label>'
        '<label>Prompt <textarea name="prompt" rows="4" required></textarea></label>'
        '<label>Max length <input name="max_length" type="number" min="1" max="4096"'
        ' placeholder="handler default"></label>'
        "<details><summary>More input fields</summary>"
        "<label>Extra input (a JSON object merged into the input)"
        ' <textarea name="extra" rows="3" placeholder=\'{"temperature": 0.7}\'></textarea>'
        "</label></details>"
        '<button type="submit">Generate</button></form>'
        '<div id="pg-result" class="pg-result" hidden>'
        '<p><span id="pg-status" class="badge">SUBMITTED</span> <a id="pg-job" href="#">job</a></p>'
        '<pre id="pg-output" class="generated"></pre></div></section>'
    )
    return page(request, "Playground", body)


async def playground_submit(request: Request) -> Response:
    dash = _dash(request)
    try:
        endpoint_id, job_input = build_generate_input(await read_json_body(request))
    except BadInput as exc:
        return JSONResponse({"error": str(exc)}, 400)
    new = NewJob(
        endpoint_id=endpoint_id,
        input_json=json.dumps(job_input, separators=(",", ":")),
        retention_ms=int(dash.settings.retention_run_s * 1000),
        id=new_job_id(),
    )
    job, _ = await dash.store.submit(new, now_ms())
    log.info("playground job submitted", extra={"job_id": job.id, "endpoint_id": endpoint_id})
    return JSONResponse(
        {
            "id": job.id,
            "endpoint_id": endpoint_id,
            "url": job_url(endpoint_id, job.id),
            "stream": f"/ui/stream/{quote(endpoint_id)}/{quote(job.id)}",
        }
    )


async def stream(request: Request) -> Response:
    """The job's stream as server-sent events (neuroq.api.sse), the same events as
    `/v2/{ep}/stream/{id}` with `Accept: text/event-stream`, for pages that hold a session
    cookie rather than an API key."""
    ids = _job_path(request)
    if ids is None:
        return JSONResponse({"error": "job not found"}, 404)
    endpoint_id, job_id = ids
    events = await sse.job_events(request, _dash(request).store, endpoint_id, job_id)
    if events is None:
        return JSONResponse({"error": f"job {job_id} not found"}, 404)
    return events


# -- static files and installation ---------------------------------------------------------------


def _load_static() -> dict[str, bytes]:
    folder = resources.files(__package__).joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in _STATIC}


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    files = _dash(request).static
    if name not in files:
        return JSONResponse({"error": f"no static file {name!r}"}, 404)
    return Response(
        files[name],
        media_type=_STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


ROUTES: list[BaseRoute] = [
    Route("/", overview, methods=["GET"]),
    Route("/login", login, methods=["GET", "POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/jobs", jobs_page, methods=["GET"]),
    Route("/jobs/{endpoint_id}/{job_id}", job_page, methods=["GET"]),
    Route("/playground", playground_page, methods=["GET"]),
    Route("/ui/live/overview", signed_in_api(live_overview), methods=["GET"]),
    Route("/ui/live/jobs", signed_in_api(live_jobs), methods=["GET"]),
    Route("/ui/live/job/{endpoint_id}/{job_id}", signed_in_api(live_job), methods=["GET"]),
    Route("/ui/action/{name}", signed_in_api(action, changes_state=True), methods=["POST"]),
    Route("/ui/playground", signed_in_api(playground_submit, changes_state=True), methods=["POST"]),
    Route("/ui/stream/{endpoint_id}/{job_id}", signed_in_api(stream), methods=["GET"]),
    Route("/ui/static/{name}", static, methods=["GET"]),
]


def create_dashboard(
    settings: Settings, store: JobStore, metrics: Metrics, activity: Activity, keys: Keys
) -> Dashboard:
    """The dashboard's state; the app serves ROUTES with it as `app.state.dashboard` and runs
    `history.run` for as long as it serves (neuroq.api.app)."""
    history = History(settings.dashboard_sample_s)
    return Dashboard(settings, store, metrics, activity, Sessions(keys), history, _load_static())
