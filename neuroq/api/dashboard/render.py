"""All of the dashboard's HTML: formatting helpers, the page frame, and each page's parts.

Rendering happens only here, so escaping happens only here: every value that comes from a job, a
worker or a request (ids, inputs, outputs, errors, chunks, filters) goes through `h()` on its way
into the markup, and everything else is a literal. The functions take what the routes read from
the store and return HTML text; they do no I/O, so the routes decide what is shown and this module
only how.

A page's live parts (the `id`-named elements that `static/dashboard.js` replaces) are rendered by
the same functions for the first page and for every `/ui/live/...` answer. No page has an inline
script or style, so the policy in SECURITY_HEADERS forbids both: markup that slipped past escaping
still could not run.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote, urlencode, urlsplit

from neuroq.api.activity import WebhookAttempt
from neuroq.api.dashboard import charts
from neuroq.api.dashboard.forms import PAGE_SIZE, SINCE_CHOICES, JobFilter
from neuroq.api.dashboard.history import PLOT_WINDOW_MS
from neuroq.api.metrics import worker_state
from neuroq.endpoints import EndpointConfig, ScalerType
from neuroq.jobs import TERMINAL, Job, JobStatus
from neuroq.store.base import FinishedMinute, LogLine, WebhookDelivery, WorkerInfo

#: at most this many stream chunks are shown on a job page (the newest)
CHUNKS_SHOWN = 500
SECURITY_HEADERS = {
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
#: the terminal states, in JobStatus order (the order of the endpoint table's columns)
_FINISHED = tuple(s.value for s in JobStatus if s in TERMINAL)


def h(value: object) -> str:
    """HTML-escape anything for text or a quoted attribute."""
    return html.escape(str(value), quote=True)


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
    """A button that `dashboard.js` turns into a confirmed POST to `/ui/action/{action}`."""
    subject = f"job {job_id}" if job_id else f"every queued job of endpoint {endpoint_id}"
    confirm = f"{label} {subject}?"
    return (
        f'<button type="button" class="{"danger" if danger else "secondary"}"'
        f' data-action="{h(action)}" data-endpoint="{h(endpoint_id)}" data-job="{h(job_id)}"'
        f' data-confirm="{h(confirm)}">{h(label)}</button>'
    )


# -- plots ---------------------------------------------------------------------------------------


def _count(value: float) -> str:
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _seconds(ms: float) -> str:
    return "0" if ms == 0 else fmt_duration(ms)


def plots(minutes: list[FinishedMinute], depth: list[tuple[int, float]], now: int) -> str:
    """The overview's plots over the last hour: per endpoint, jobs finished per minute and their
    mean execution and delay (from `JobStore.finished_minutes`, so they survive a restart);
    above them the queue depth this process sampled (`History.depth`)."""
    start = now - PLOT_WINDOW_MS
    depth_series = [charts.Series("queued, all endpoints", "s-queued", depth)]
    queue = charts.line_chart(
        "Queue depth (sampled by this server)", depth_series, start_ms=start, end_ms=now, fmt=_count
    )
    by_endpoint: dict[str, list[FinishedMinute]] = {}
    for minute in minutes:
        by_endpoint.setdefault(minute.endpoint_id, []).append(minute)
    sections = []
    for ep, rows in sorted(by_endpoint.items()):
        done = charts.Series("completed", "s-ok", [(m.at_ms, m.completed) for m in rows])
        other = charts.Series(
            "failed, cancelled or timed out",
            "s-bad",
            [(m.at_ms, m.finished - m.completed) for m in rows],
        )
        execution = charts.Series(
            "mean execution",
            "s-exec",
            [(m.at_ms, m.mean_execution_ms) for m in rows if m.mean_execution_ms is not None],
        )
        delay = charts.Series(
            "mean delay",
            "s-delay",
            [(m.at_ms, m.mean_delay_ms) for m in rows if m.mean_delay_ms is not None],
        )
        throughput = charts.bar_chart(
            "Throughput, jobs/min",
            [done, other],
            start_ms=start,
            end_ms=now,
            bucket_ms=60_000,
            fmt=_count,
        )
        latency = charts.line_chart(
            "Latency", [execution, delay], start_ms=start, end_ms=now, fmt=_seconds
        )
        sections.append(
            f'<section class="endpoint-plots" data-endpoint="{h(ep)}"><h3>{h(ep)}</h3>'
            f'<div class="plots">{throughput}{latency}</div></section>'
        )
    if not sections:
        sections.append(
            '<p class="muted">No job finished in the last hour (finished jobs count here until'
            " their retention ends).</p>"
        )
    return f'<div class="plots">{queue}</div>{"".join(sections)}'


# -- page frame ----------------------------------------------------------------------------------


def document(title: str, body: str, *, path: str, csrf: str | None, live: str | None = None) -> str:
    """A whole page around `body`. `csrf` is the session's CSRF token, None when signed out
    (then the page has no navigation); `live` is the URL the script long-polls for fresh parts;
    `path` marks the current navigation link."""
    nav = ""
    if csrf is not None:
        links = [("/", "Overview"), ("/jobs", "Jobs"), ("/playground", "Playground")]
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
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{h(csrf or "")}">'
        f"<title>{h(title)} · NeuroQ</title>"
        '<link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="/ui/static/dashboard.css">'
        '<script src="/ui/static/dashboard.js" defer></script></head>'
        f'<body{live_attr}><header><a class="brand" href="/">NeuroQ</a>{nav}</header>'
        f'<main><div id="flash" role="status" aria-live="polite"></div>{body}</main>'
        "</body></html>"
    )


def error_message(message: object) -> str:
    return f'<p class="error" role="alert">{h(message)}</p>'


LOGOUT_REFUSED = '<p class="error">Refused: stale or cross-site form.</p>'


# -- sign in -------------------------------------------------------------------------------------


def login_body(next_path: str, error: str = "") -> str:
    message = error_message(error) if error else ""
    return (
        '<section class="card narrow"><h1>Sign in</h1>'
        "<p>Use a client API key of this server (<code>NEUROQ_API_KEYS</code>, or the key"
        " generated into the data directory).</p>"
        f'{message}<form method="post" action="/login" class="stack">'
        f'<input type="hidden" name="next" value="{h(next_path)}">'
        '<label>API key <input type="password" name="key" autocomplete="current-password"'
        ' required autofocus></label><button type="submit">Sign in</button></form></section>'
    )


# -- overview ------------------------------------------------------------------------------------


def unserved_badge(warning: str) -> str:
    """The mark of an endpoint no worker has served; the submit warning is its tooltip."""
    return (
        f' <span class="badge unserved" title="{h(warning)}">'
        "no worker has served this endpoint</span>"
    )


def unserved_note(unserved: dict[str, str]) -> str:
    """The submit warning of each endpoint in `unserved`, as a note above the job list."""
    return "".join(
        f'<p class="warning" role="note" data-unserved="{h(ep)}">{h(w)}</p>'
        for ep, w in sorted(unserved.items())
    )


def endpoints_table(
    counts: dict[str, dict[str, int]],
    workers: list[WorkerInfo],
    rate: Callable[[str, str], float],
    unserved: dict[str, str] | None = None,
) -> str:
    """Every endpoint with jobs or workers: counts by status, `rate(endpoint, status)` per
    minute for the finished ones, and its purge button. An endpoint in `unserved` (no worker
    has served it; the value is the submit warning's text) is marked as such."""
    unserved = unserved or {}
    endpoints = sorted(set(counts) | {w.endpoint_id for w in workers})
    rows = []
    for ep in endpoints:
        c = counts.get(ep, {})
        n_workers = sum(1 for w in workers if w.endpoint_id == ep)
        warning = unserved_badge(unserved[ep]) if ep in unserved else ""
        cells = [
            f'<td><a href="/jobs?{urlencode({"endpoint": ep})}">{h(ep)}</a>{warning}</td>',
            f'<td class="num" data-col="queued">{c.get("IN_QUEUE", 0)}</td>',
            f'<td class="num" data-col="running">{c.get("IN_PROGRESS", 0)}</td>',
        ]
        for status in _FINISHED:
            cells.append(
                f'<td class="num" data-col="{status.lower()}">{c.get(status, 0)}'
                f"<small>{rate(ep, status):.1f}/min</small></td>"
            )
        cells.append(f'<td class="num">{n_workers}</td>')
        cells.append(f"<td>{action_button('purge', 'Purge queue', ep, danger=True)}</td>")
        rows.append(f'<tr data-endpoint="{h(ep)}">{"".join(cells)}</tr>')
    if not rows:
        return '<p class="muted">No jobs or workers yet.</p>'
    return (
        '<div class="scroll"><table><thead><tr><th>Endpoint</th><th>Queued</th><th>Running</th>'
        "<th>Completed</th><th>Failed</th><th>Cancelled</th><th>Timed out</th><th>Workers</th>"
        f"<th></th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def scaler_rule(config: EndpointConfig) -> str:
    """The endpoint's scaling rule in words (docs/scaling.md, "Settings")."""
    if config.scaler_type is ScalerType.REQUEST_COUNT:
        return f"1 worker per {config.scaler_value} jobs"
    return f"+1 worker while a job waits over {config.scaler_value} s"


def _runs(config: EndpointConfig) -> str:
    """What a worker runs. Of a command only the program is shown: its arguments, like `env`,
    may carry secrets, and this page is for watching, not configuring."""
    if config.handler is not None:
        return f'<code title="{h(config.handler)}">{h(config.handler)}</code>'
    if config.command:
        return f"<code>{h(config.command[0])}</code> …"
    return '<span class="muted">none (a plain queue)</span>'


def configured_endpoints(
    configs: list[EndpointConfig], reports: dict[str, dict[str, object]], workers: list[WorkerInfo]
) -> str:
    """Each configured endpoint's settings beside its workers now (live ones, of which how many
    are still starting) and the workers its rule wants: `reports` holds, per endpoint, what
    `/endpoints/{id}/metrics` answers (`desiredWorkers` is the rule applied to the queue)."""
    rows = []
    for config in sorted(configs, key=lambda c: c.endpoint_id):
        ep = config.endpoint_id
        report = reports.get(ep, {})
        mine = [w for w in workers if w.endpoint_id == ep and w.state != "recycling"]
        starting = sum(1 for w in mine if w.state == "initializing")
        now_cell = f"{len(mine)}" + (f"<small>{starting} starting</small>" if starting else "")
        cells = [
            f'<td><a href="/jobs?{urlencode({"endpoint": ep})}">{h(ep)}</a></td>',
            f"<td>{_runs(config)}</td>",
            f'<td class="num" data-col="min-max">{config.workers_min}–{config.workers_max}</td>',
            f'<td class="num" data-col="spare">{config.workers_spare}</td>',
            f'<td class="num" data-col="idle">{config.idle_timeout_s} s</td>',
            f'<td data-col="rule">{h(scaler_rule(config))}</td>',
            f'<td class="num" data-col="concurrency">{config.concurrency}</td>',
            f'<td class="num">{fmt_duration(config.execution_timeout_ms)}</td>',
            f'<td class="num" data-col="workers-now">{now_cell}</td>',
            f'<td class="num" data-col="workers-desired">{h(report.get("desiredWorkers", "—"))}'
            "</td>",
        ]
        rows.append(f'<tr data-endpoint="{h(ep)}">{"".join(cells)}</tr>')
    if not rows:
        return (
            '<p class="muted">No endpoint is configured: the scaler starts no worker. See '
            "<code>neuroq endpoint create</code> (docs/scaling.md).</p>"
        )
    return (
        '<div class="scroll"><table><thead><tr><th>Endpoint</th><th>Runs</th>'
        "<th>Workers min–max</th>"
        '<th title="workersSpare: idle workers kept started beyond the busy ones">Spare</th>'
        "<th>Idle timeout</th><th>Scaling rule</th><th>Concurrency</th>"
        "<th>Execution timeout</th><th>Workers now</th>"
        '<th title="desiredWorkers, as /endpoints/{id}/metrics reports it">Desired</th>'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def workers_table(workers: list[WorkerInfo], now: int) -> str:
    rows = []
    for w in workers:
        jobs = " ".join(id_link(job_url(w.endpoint_id, j), j) for j in w.held_job_ids)
        state = worker_state(w)
        rows.append(
            f'<tr data-worker="{h(w.worker_id)}">'
            f'<td><span class="id" title="{h(w.worker_id)}">{h(w.worker_id)}</span></td>'
            f"<td>{h(w.endpoint_id)}</td>"
            f'<td><span class="badge state-{h(state)}">{h(state)}</span></td>'
            f'<td class="ids">{jobs or "—"}</td><td>{fmt_ago(w.last_seen_ms, now)}</td></tr>'
        )
    if not rows:
        return '<p class="muted">No worker has been in touch recently.</p>'
    return (
        '<div class="scroll"><table><thead><tr><th>Worker</th><th>Endpoint</th><th>State</th>'
        "<th>Current jobs</th><th>Last heartbeat</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def overview_body(parts: dict[str, str]) -> str:
    return (
        '<section class="card"><h1>Endpoints</h1>'
        f'<div id="endpoints">{parts["endpoints"]}</div></section>'
        '<section class="card"><h2>Serverless endpoints</h2>'
        f'<div id="configured">{parts["configured"]}</div></section>'
        '<section class="card"><h2>Last hour</h2>'
        f'<div id="plots">{parts["plots"]}</div></section>'
        '<section class="card"><h2>Workers</h2>'
        f'<div id="workers">{parts["workers"]}</div></section>'
    )


# -- job list ------------------------------------------------------------------------------------


def id_link(href: str, value: str) -> str:
    """A long id on one line, cut with an ellipsis where the column ends; the whole id is in
    the tooltip and behind the link."""
    return f'<a class="id" href="{h(href)}" title="{h(value)}">{h(value)}</a>'


def _job_row(job: Job) -> str:
    # data-label names each cell where a phone shows the rows as cards (dashboard.css)
    return (
        f'<tr data-job="{h(job.id)}">'
        f'<td class="lead">{id_link(job_url(job.endpoint_id, job.id), job.id)}</td>'
        f'<td class="status">{badge(job.status)}</td>'
        f'<td data-label="Endpoint">{h(job.endpoint_id)}</td>'
        f'<td data-label="Created">{fmt_time(job.created_at_ms)}</td>'
        f'<td data-label="Delay">{fmt_duration(job.delay_time_ms)}</td>'
        f'<td data-label="Execution">{fmt_duration(job.execution_time_ms)}</td>'
        f'<td class="num" data-label="Retries">{job.retries}</td></tr>'
    )


def jobs_list(jobs: list[Job], filt: JobFilter, *, has_next: bool) -> str:
    """One page of the job list (at most PAGE_SIZE jobs) and its pager; `has_next` says an
    older page exists."""
    if jobs:
        table = (
            '<div class="scroll"><table class="jobs cards"><thead><tr><th>Job</th><th>Status</th>'
            "<th>Endpoint</th><th>Created (UTC)</th><th>Delay</th><th>Execution</th>"
            "<th>Retries</th></tr></thead>"
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
    return table + f'<div class="pager">{" ".join(pager)}</div>'


def _select(name: str, label: str, options: list[tuple[str, str]], current: str) -> str:
    opts = "".join(
        f'<option value="{h(v)}"{" selected" if v == current else ""}>{h(text)}</option>'
        for v, text in options
    )
    return f'<label>{h(label)} <select name="{h(name)}">{opts}</select></label>'


def jobs_body(filt: JobFilter, endpoints: list[str], parts: dict[str, str]) -> str:
    """The job list page: the filter form (offering `endpoints`) above the list."""
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
    return (
        f'<section class="card"><h1>Jobs</h1>{form}<div id="jobs">{parts["jobs"]}</div></section>'
    )


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


#: (count, total) key pairs that make a progress bar, the finest first: NeuroQ's train action
#: reports epoch/epochs and step/total_steps (neuroq.handler.actions); the rest are common names
_COUNT_KEYS = (("step", "total_steps"), ("step", "total"), ("step", "steps"), ("epoch", "epochs"))


def _number(value: object) -> float | None:
    """A finite JSON number; a bool is not one, though Python says so."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond any float
        return None
    return number if math.isfinite(number) else None


def _figure(number: float) -> str:
    return f"{number:.0f}" if number.is_integer() else f"{number:.4g}"


def progress_fraction(output: dict[str, object]) -> tuple[float, str] | None:
    """How far a progress dict says its job is, from 0 to 1, with the figures it came from in
    words; None when it says nothing a bar can show. `percent` is out of 100; `progress` is a
    fraction when at most 1 and out of 100 above; else the first pair of _COUNT_KEYS present,
    with a positive total."""
    percent = _number(output.get("percent"))
    if percent is None:
        progress = _number(output.get("progress"))
        if progress is not None:
            percent = progress * 100 if progress <= 1 else progress
    if percent is not None:
        fraction = min(1.0, max(0.0, percent / 100))
        return fraction, f"{fraction * 100:.0f}%"
    for count_key, total_key in _COUNT_KEYS:
        count, total = _number(output.get(count_key)), _number(output.get(total_key))
        if count is not None and total is not None and total > 0:
            fraction = min(1.0, max(0.0, count / total))
            return (
                fraction,
                f"{fraction * 100:.0f}% · {count_key} {_figure(count)} of {_figure(total)}",
            )
    return None


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def progress_view(output_json: str | None) -> str:
    """A running job's progress: a bar when its output is a dict that says how far it is
    (`progress_fraction`), with its other plain values labelled beside it and anything nested
    as JSON below; any other output as pretty JSON."""
    try:
        output = json.loads(output_json) if output_json is not None else None
    except ValueError:
        output = None
    found = progress_fraction(output) if isinstance(output, dict) else None
    if not isinstance(output, dict) or found is None:
        return pretty_json(output_json)
    fraction, words = found
    scalars = {k: v for k, v in output.items() if not isinstance(v, dict | list)}
    nested = {k: v for k, v in output.items() if isinstance(v, dict | list)}
    values = "".join(f"<dt>{h(k)}</dt><dd>{h(_scalar(v))}</dd>" for k, v in scalars.items())
    rest = pretty_json(json.dumps(nested, ensure_ascii=False)) if nested else ""
    return (
        f'<div class="progress"><progress max="1" value="{fraction:.4f}"'
        f' aria-label="{h(words)}">{h(words)}</progress>'
        f'<span class="progress-words">{h(words)}</span></div>'
        f'<dl class="facts progress-values">{values}</dl>{rest}'
    )


def job_details(
    job: Job,
    chunks: list[tuple[int, str]],
    attempts: list[WebhookAttempt],
    pending: list[WebhookDelivery],
    now: int,
) -> str:
    """Everything about one job: action buttons, facts, its result so far, input, stream chunks
    and webhook deliveries (`attempts` seen by this process, `pending` in the outbox)."""
    endpoint_id, job_id = job.endpoint_id, job.id
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
        result_html = f"<h2>Progress</h2>{progress_view(job.output_json)}"
    elif job.error_json is not None:
        result_html = f'<h2>Error</h2><div class="error-box">{pretty_json(job.error_json)}</div>'
    elif job.status.is_terminal:
        result_html = f"<h2>Output</h2>{pretty_json(job.output_json)}"
    else:
        result_html = '<h2>Output</h2><p class="muted">not started yet</p>'
    hook_items = [
        f"<li>attempt {a.attempt} at {fmt_time(a.at_ms)}: "
        f"{'delivered' if a.ok else 'failed, gave up' if a.final else 'failed, will retry'}</li>"
        for a in attempts
    ] + [
        f"<li>pending: {d.attempts} attempt(s) made, next at {fmt_time(d.next_attempt_at_ms)}</li>"
        for d in pending
    ]
    hooks = f"<ul>{''.join(hook_items)}</ul>" if hook_items else '<p class="muted">none</p>'
    return (
        f'<div class="actions">{"".join(actions)}</div>'
        f'<dl class="facts">{facts_html}</dl>{result_html}'
        f"<h2>Input</h2>{pretty_json(job.input_json)}"
        f"<h2>Stream chunks ({len(chunks)})</h2>{_chunk_list(chunks)}"
        f"<h2>Webhook deliveries</h2>{hooks}"
    )


#: log lines a job page shows; the rest are a `neuroq jobs logs` or GET /logs away
LOG_LINES_SHOWN = 500


def job_logs(lines: list[LogLine], truncated: bool) -> str:
    """The job's captured log lines (neuroq.worker.job_log), each with its time, level and
    attempt; every text escaped."""
    if not lines:
        return '<h2>Logs</h2><p class="muted">none captured</p>'
    shown = lines[:LOG_LINES_SHOWN]
    notes = []
    if len(lines) > LOG_LINES_SHOWN:
        notes.append(f"the first {LOG_LINES_SHOWN} lines; neuroq jobs logs ID prints all")
    if truncated:
        notes.append("lines past the per-job cap were dropped")
    note = f'<p class="muted">{h("; ".join(notes))}</p>' if notes else ""
    # `cards`: on a phone each line is a card, its time, level and attempt above the full-width
    # text (as the job list's rows are), so the text is not squeezed into a fourth column
    rows = "".join(
        f'<tr class="log-{h(line.level.lower())}"><td>{fmt_time(line.at_ms)}</td>'
        f'<td>{h(line.level)}</td><td class="num" data-label="attempt">{line.attempt}</td>'
        f'<td class="line"><pre>{h(line.line)}</pre></td></tr>'
        for line in shown
    )
    return (
        f'<h2>Logs ({len(shown)})</h2>{note}<table class="logs cards"><thead><tr><th>time</th>'
        f"<th>level</th><th>attempt</th><th>line</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def job_body(job_id: str, parts: dict[str, str]) -> str:
    return (
        f'<section class="card"><h1 class="ids">Job {h(job_id)}</h1>'
        f'<div id="job">{parts["job"]}</div></section>'
    )


JOB_MISSING = (
    '<section class="card"><h1>Job not found</h1><p>It is unknown, or was deleted after'
    ' its retention ran out.</p><p><a href="/jobs">All jobs</a></p></section>'
)


# -- playground ----------------------------------------------------------------------------------


def playground(
    max_length_cap: int, max_prompt_chars: int, schemas: dict[str, dict[str, object]]
) -> str:
    """The playground: a NeuroQ `generate` form, its limits the handler's, and beside it a form
    that sends any JSON input to any endpoint. The input is a JSON text area, checked as JSON as
    it is typed and again by the server; for an endpoint in `schemas` (its `inputSchema`
    setting), a field per property sits above it, which `dashboard.js` keeps in step with it."""
    generate = (
        '<section class="card"><h1>Playground</h1>'
        "<p>Submits a <code>generate</code> job and shows the text as the worker streams it.</p>"
        '<form id="playground" class="stack">'
        '<label>Endpoint <input name="endpoint_id" value="neuroq" required'
        ' pattern="[A-Za-z0-9_\\-]{1,128}"></label>'
        f'<label>Prompt <textarea name="prompt" rows="4" required maxlength="{max_prompt_chars}">'
        "</textarea></label>"
        f'<label>Max length <input name="max_length" type="number" min="1"'
        f' max="{max_length_cap}" placeholder="handler default; at most {max_length_cap}">'
        "</label>"
        "<details><summary>More input fields</summary>"
        "<label>Extra input (a JSON object merged into the input)"
        ' <textarea name="extra" rows="3" placeholder=\'{"temperature": 0.7}\'></textarea>'
        "</label></details>"
        '<button type="submit">Generate</button></form>'
        '<div id="pg-result" class="pg-result" hidden>'
        '<p><span id="pg-status" class="badge">SUBMITTED</span> <a id="pg-job" class="id"'
        ' href="#">job</a></p><pre id="pg-output" class="generated"></pre></div></section>'
    )
    example = h(json.dumps({"action": "generate", "prompt": "Hello", "max_length": 40}))
    endpoints = "".join(f'<option value="{h(ep)}"></option>' for ep in sorted(schemas))
    fieldsets = "".join(schema_fields(ep, schema) for ep, schema in sorted(schemas.items()))
    request = (
        '<section class="card"><h2>JSON request</h2>'
        "<p>Sends any JSON value as the job's <code>input</code>, as"
        " <code>POST /v2/{endpoint}/run</code> does. An endpoint whose settings declare an"
        " <code>inputSchema</code> gets a field per property, kept in step with the JSON; the"
        " input is checked as JSON, and the handler judges the rest.</p>"
        '<form id="json-request" class="stack">'
        '<label>Endpoint <input name="endpoint_id" value="neuroq" required list="schema-endpoints"'
        ' pattern="[A-Za-z0-9_\\-]{1,128}"></label>'
        f'<datalist id="schema-endpoints">{endpoints}</datalist>{fieldsets}'
        '<label>Input (JSON) <textarea name="input" rows="8" required spellcheck="false">'
        f"{example}</textarea></label>"
        '<p id="json-problem" class="error" role="alert" hidden></p>'
        '<button type="submit">Send</button></form>'
        '<div id="json-result" class="pg-result" hidden>'
        '<p><span id="json-status" class="badge">SUBMITTED</span> <a id="json-job" class="id"'
        ' href="#">job</a></p><pre id="json-output"></pre></div></section>'
    )
    return f'<div class="side-by-side">{generate}{request}</div>'


def _bounds(prop: dict[str, object]) -> str:
    """A property's bounds and default in words, for its hint."""
    words = [
        f"{sign} {_scalar(prop[key])}"
        for key, sign in (
            ("minimum", "≥"),
            ("exclusiveMinimum", ">"),
            ("maximum", "≤"),
            ("exclusiveMaximum", "<"),
        )
        if key in prop
    ]
    if "maxLength" in prop:
        words.append(f"at most {_scalar(prop['maxLength'])} characters")
    if "default" in prop:
        words.append(f"default {json.dumps(prop['default'], ensure_ascii=False)}")
    return ", ".join(words)


#: a string property longer than this gets a text area rather than a one-line input
_LONG_TEXT = 256


def _schema_control(prop: dict[str, object], required: bool) -> str:
    """The form control of one property; `data-type` tells dashboard.js how to read it."""
    kind = str(prop["type"])
    default = prop.get("default")
    has_default = "default" in prop
    attrs = f' data-type="{h(kind)}"' + (" required" if required and kind != "boolean" else "")
    enum = prop.get("enum")
    if isinstance(enum, list):
        unset = "" if required else '<option value="">(not set)</option>'
        options = "".join(
            f'<option value="{h(json.dumps(v, ensure_ascii=False))}"'
            f"{' selected' if has_default and v == default else ''}>"
            f"{h(v if isinstance(v, str) else json.dumps(v))}</option>"
            for v in enum
        )
        return f"<select{attrs}>{unset}{options}</select>"
    if kind == "boolean":
        # without a default the key starts absent, which dashboard.js shows as indeterminate
        state = " checked" if default is True else "" if has_default else " data-unset"
        return f'<input type="checkbox"{attrs}{state}>'
    if kind in ("integer", "number"):
        limits = "".join(
            f' {attr}="{h(_scalar(prop[key]))}"'
            for key, attr in (("minimum", "min"), ("maximum", "max"))
            if key in prop
        )
        step = "1" if kind == "integer" else "any"
        value = f' value="{h(_scalar(default))}"' if has_default else ""
        return f'<input type="number" step="{step}"{limits}{value}{attrs}>'
    if kind in ("array", "object"):
        text = json.dumps(default, ensure_ascii=False) if has_default else ""
        hint = "[ ... ]" if kind == "array" else "{ ... }"
        return (
            f'<textarea rows="2" spellcheck="false" placeholder="{h(hint)}"{attrs}>{h(text)}'
            "</textarea>"
        )
    lengths = "".join(
        f' {attr}="{h(_scalar(prop[key]))}"'
        for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength"))
        if key in prop
    )
    text = h(default) if has_default else ""
    max_length = prop.get("maxLength")
    if isinstance(max_length, int) and max_length > _LONG_TEXT:
        return f'<textarea rows="3"{lengths}{attrs}>{text}</textarea>'
    return f'<input type="text"{lengths} value="{text}"{attrs}>'


def schema_fields(endpoint_id: str, schema: dict[str, object]) -> str:
    """The fields of one endpoint's inputSchema (neuroq.input_schema): one per property, its
    default filled in, its description and bounds beside it, required ones marked. Hidden and
    disabled until `dashboard.js` sees the endpoint chosen. Every name, description and enum
    value is escaped here."""
    properties = schema.get("properties")
    props = properties if isinstance(properties, dict) else {}
    listed = schema.get("required")
    required = set(listed) if isinstance(listed, list) else set()
    fields = []
    for name, prop in props.items():
        is_required = name in required
        mark = ' <span class="required">required</span>' if is_required else ""
        title = prop.get("title")
        label = f'<span class="prop-name">{h(name)}</span>' + (
            f' <span class="muted">{h(title)}</span>' if isinstance(title, str) else ""
        )
        hints = [str(prop.get("description", "")), _bounds(prop)]
        hint = " · ".join(part for part in hints if part)
        fields.append(
            f'<label class="schema-field" data-prop="{h(name)}">'
            f"<span>{label}{mark}</span>{_schema_control(prop, is_required)}"
            + (f'<small class="muted">{h(hint)}</small>' if hint else "")
            + "</label>"
        )
    about = schema.get("description")
    intro = f'<p class="muted">{h(about)}</p>' if isinstance(about, str) else ""
    return (
        f'<fieldset class="schema-fields stack" data-schema-for="{h(endpoint_id)}" hidden'
        f" disabled><legend>Input fields of <code>{h(endpoint_id)}</code></legend>{intro}"
        f"{''.join(fields)}</fieldset>"
    )
