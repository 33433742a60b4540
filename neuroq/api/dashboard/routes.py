"""The dashboard's request handlers and ROUTES.

A handler checks the session (`signed_in_page` sends a browser to the login page;
`signed_in_api` answers 401 and, for a change, also wants the CSRF token and a same-site
request), reads or changes the store, and hands the records to `render`. Every page names a live
URL: the script long-polls it with the version it last saw, the server holds the request until
the data changed (an `Activity.changes` or job topic moved) or `LIVE_HOLD_S` passed, and answers
with freshly rendered fragments that replace the page's `id`-named parts.

Routes: `/`, `/jobs`, `/jobs/{endpoint_id}/{job_id}`, `/playground` (pages), `/login`, `/logout`,
and under `/ui/`: `live/...` (fragments), `action/{cancel|retry|purge}`, `playground` and
`submit` (the playground's two forms),
`stream/{endpoint_id}/{job_id}` (server-sent events), `static/...`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api import job_list, served, sse
from neuroq.api.activity import JOBS_CHANGED
from neuroq.api.dashboard import render
from neuroq.api.dashboard.forms import (
    MAX_JSON_INPUT_BYTES,
    MAX_LENGTH_CAP,
    MAX_PROMPT_CHARS,
    PAGE_SIZE,
    SINCE_CHOICES,
    BadInput,
    FilterError,
    JobFilter,
    build_generate_input,
    build_json_input,
    field_id,
    parse_filter,
    read_form,
    read_json_body,
    safe_next,
)
from neuroq.api.dashboard.history import PLOT_WINDOW_MS
from neuroq.api.dashboard.sessions import SESSION_COOKIE, SESSION_TTL_S, same_site
from neuroq.api.dashboard.state import STATIC_FILES, Dashboard
from neuroq.jobs import NewJob, is_path_safe, new_job_id, now_ms
from neuroq.scaler.source import endpoint_report
from neuroq.store.base import InvalidTransition, QueueStats, job_topic

log = logging.getLogger("neuroq.dashboard")

#: longest a live request is held when nothing changes (bounds staleness of heartbeat ages)
LIVE_HOLD_S = 5.0


def _dash(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _session(request: Request) -> str | None:
    token = request.cookies.get(SESSION_COOKIE)
    return token if _dash(request).sessions.valid(token) else None


def page(
    request: Request, title: str, body: str, *, live: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """`body` in the page frame, with navigation and a CSRF token when signed in."""
    token = _session(request)
    csrf = None if token is None else _dash(request).sessions.csrf(token)
    document = render.document(title, body, path=request.url.path, csrf=csrf, live=live)
    return HTMLResponse(document, status_code=status_code, headers=render.SECURITY_HEADERS)


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?{urlencode({'next': target})}", status_code=303)


def _unauthorized() -> Response:
    return JSONResponse({"error": "not signed in: log in to the dashboard again"}, 401)


Handler = Callable[[Request], Awaitable[Response]]


def signed_in_page(handler: Handler) -> Handler:
    """A page: without a valid session, redirect to the login page, which comes back here."""

    async def wrapped(request: Request) -> Response:
        if _session(request) is None:
            return _login_redirect(request)
        return await handler(request)

    return wrapped


def signed_in_api(handler: Handler, *, changes_state: bool = False) -> Handler:
    """A script's request: 401 without a valid session; one that `changes_state` must also
    carry the session's CSRF token (`X-CSRF-Token`) and come from this site, else 403."""

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


def _login_page(
    request: Request, next_path: str, error: str = "", status_code: int = 200
) -> HTMLResponse:
    return page(request, "Sign in", render.login_body(next_path, error), status_code=status_code)


async def login(request: Request) -> Response:
    if request.method == "GET":
        return _login_page(request, safe_next(request.query_params.get("next")))
    form = await read_form(request)
    next_path = safe_next(form.get("next"))
    if not same_site(request):
        return _login_page(
            request, next_path, "Refused: the form was posted from another site.", 403
        )
    token = _dash(request).sessions.login(form.get("key", "").strip())
    if token is None:
        log.warning("dashboard sign-in refused: wrong API key")
        return _login_page(request, next_path, "That API key is not valid.", 401)
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
        return page(request, "Sign out", render.LOGOUT_REFUSED, status_code=403)
    sessions.logout(token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# -- overview ------------------------------------------------------------------------------------


async def unserved_endpoints(request: Request, endpoints: list[str]) -> dict[str, str]:
    """Of `endpoints`, those no worker has served, each with the warning a submit to it gets.
    Asked through the submit warning itself (neuroq.api.served), so the dashboard and
    X-NeuroQ-Warning agree and share its per-endpoint cache: a few reads every CACHE_S."""
    found = {}
    for endpoint_id in endpoints:
        warning = (await served.warning_headers(request, endpoint_id)).get(served.HEADER)
        if warning is not None:
            found[endpoint_id] = warning
    return found


async def overview_parts(request: Request) -> dict[str, str]:
    dash = _dash(request)
    now = now_ms()
    counts = await dash.store.job_counts(now)
    workers = await dash.store.list_workers()

    def rate(endpoint_id: str, status: str) -> float:
        return dash.history.rate_per_min(dash.metrics, endpoint_id, status, now)

    depth = dash.history.depth(counts, now)
    minutes = await dash.store.finished_minutes(now - PLOT_WINDOW_MS, now)
    configs = await dash.store.list_endpoints()
    stats = await dash.store.queue_stats() if configs else {}
    reports = {
        c.endpoint_id: endpoint_report(
            c.endpoint_id,
            c,
            stats.get(c.endpoint_id, QueueStats()),
            [w for w in workers if w.endpoint_id == c.endpoint_id],
            now,
        )
        for c in configs
    }
    # Only a queue with jobs waiting is worth a warning: they wait for a worker that never came.
    queued = sorted(ep for ep, c in counts.items() if c.get("IN_QUEUE", 0))
    unserved = await unserved_endpoints(request, queued)
    return {
        "endpoints": render.endpoints_table(counts, workers, rate, unserved),
        "configured": render.configured_endpoints(configs, reports, workers),
        "workers": render.workers_table(workers, now),
        "plots": render.plots(minutes, depth, now),
    }


@signed_in_page
async def overview(request: Request) -> Response:
    body = render.overview_body(await overview_parts(request))
    return page(request, "Overview", body, live="/ui/live/overview")


# -- job list ------------------------------------------------------------------------------------


async def jobs_parts(request: Request, filt: JobFilter) -> dict[str, str]:
    dash = _dash(request)
    now = now_ms()
    window = SINCE_CHOICES[filt.since][1]
    # The query of GET /v2/jobs, so a filter and a page mean the same in both.
    found = await job_list.read_page(
        dash.store,
        endpoint_id=filt.endpoint_id,
        status=filt.status,
        since_ms=0 if window is None else now - window,
        limit=PAGE_SIZE,
        offset=filt.offset,
        now_ms=now,
    )
    unserved = await unserved_endpoints(request, [filt.endpoint_id] if filt.endpoint_id else [])
    listed = render.jobs_list(found.jobs, filt, has_next=found.next_offset is not None)
    return {"jobs": render.unserved_note(unserved) + listed}


@signed_in_page
async def jobs_page(request: Request) -> Response:
    try:
        filt = parse_filter(request)
    except FilterError as exc:
        return page(request, "Jobs", render.error_message(exc), status_code=400)
    counts = await _dash(request).store.job_counts(now_ms())
    endpoints = sorted(set(counts) | ({filt.endpoint_id} if filt.endpoint_id else set()))
    body = render.jobs_body(filt, endpoints, await jobs_parts(request, filt))
    return page(request, "Jobs", body, live=f"/ui/live/jobs?{filt.query()}")


# -- job page ------------------------------------------------------------------------------------


async def job_parts(request: Request, endpoint_id: str, job_id: str) -> dict[str, str] | None:
    dash = _dash(request)
    result = await dash.store.read_stream(endpoint_id, job_id, after_seq=0)
    if result is None:
        return None
    job, chunks = result
    now = now_ms()
    pending = await dash.store.job_webhooks(job_id)
    attempts = dash.activity.webhook_attempts(job_id)
    logs = await dash.store.read_logs(endpoint_id, job_id, limit=render.LOG_LINES_SHOWN + 1)
    lines, truncated = (logs[1], logs[2]) if logs is not None else ([], False)
    details = render.job_details(job, chunks, attempts, pending, now)
    return {"job": details + render.job_logs(lines, truncated)}


def _job_path(request: Request) -> tuple[str, str] | None:
    endpoint_id = request.path_params["endpoint_id"]
    job_id = request.path_params["job_id"]
    if not is_path_safe(endpoint_id) or not is_path_safe(job_id):
        return None
    return endpoint_id, job_id


def _job_missing(request: Request) -> HTMLResponse:
    return page(request, "Job not found", render.JOB_MISSING, status_code=404)


@signed_in_page
async def job_page(request: Request) -> Response:
    ids = _job_path(request)
    parts = None if ids is None else await job_parts(request, *ids)
    if ids is None or parts is None:
        return _job_missing(request)
    endpoint_id, job_id = ids
    body = render.job_body(job_id, parts)
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
        # ends at once when the server stops, so an open page never holds up a shutdown
        stop = request.app.state.server_stop
        await stop.wait(topic, int(seen[len(prefix) :]), LIVE_HOLD_S, notifier)
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
    configs = await _dash(request).store.list_endpoints()
    schemas = {c.endpoint_id: c.input_schema for c in configs if c.input_schema is not None}
    return page(request, "Playground", render.playground(MAX_LENGTH_CAP, MAX_PROMPT_CHARS, schemas))


async def playground_submit(request: Request) -> Response:
    try:
        endpoint_id, job_input = build_generate_input(await read_json_body(request))
    except BadInput as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return await _submit(request, endpoint_id, json.dumps(job_input, separators=(",", ":")))


async def json_submit(request: Request) -> Response:
    """The JSON request form: any JSON input to any endpoint."""
    try:
        body = await read_json_body(request, limit=MAX_JSON_INPUT_BYTES * 2)
        endpoint_id, input_json = build_json_input(body)
    except BadInput as exc:
        return JSONResponse({"error": str(exc)}, 400)
    return await _submit(request, endpoint_id, input_json)


async def _submit(request: Request, endpoint_id: str, input_json: str) -> Response:
    dash = _dash(request)
    new = NewJob(
        endpoint_id=endpoint_id,
        input_json=input_json,
        retention_ms=int(dash.settings.retention_run_s * 1000),
        id=new_job_id(),
    )
    job, _ = await dash.store.submit(new, now_ms())
    log.info("playground job submitted", extra={"job_id": job.id, "endpoint_id": endpoint_id})
    return JSONResponse(
        {
            "id": job.id,
            "endpoint_id": endpoint_id,
            "url": render.job_url(endpoint_id, job.id),
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


# -- static files ------------------------------------------------------------------------------


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    files = _dash(request).static
    if name not in files:
        return JSONResponse({"error": f"no static file {name!r}"}, 404)
    return Response(
        files[name],
        media_type=STATIC_FILES[name],
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
    Route("/ui/submit", signed_in_api(json_submit, changes_state=True), methods=["POST"]),
    Route("/ui/stream/{endpoint_id}/{job_id}", signed_in_api(stream), methods=["GET"]),
    Route("/ui/static/{name}", static, methods=["GET"]),
]
