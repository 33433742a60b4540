"""The client-facing routes under `/v2/{endpoint_id}/` (docs/api.md).

Handlers hold no job state: each reads or changes the store and renders the job's status object.
Every long-poll (runsync, status?wait, status-sync, stream?wait, the SSE stream) sleeps on the
store's notifier through `ServerStop.wait_until`, so a change made in this process answers at once
and one made by another process is seen within `store.recheck_s`; when the server stops, each
answers at once with the job as it is (neuroq.api.stopping).

Our endpoints need no registration: any path-safe id names a queue, so only an id that could not
be a path segment for workers is "unknown" (404).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api import served, sse
from neuroq.api.schemas import (
    parse_idempotency_key,
    parse_json_object,
    parse_query_ms,
    parse_submit,
    parse_wait_ms,
    read_body_limited,
)
from neuroq.api.stopping import ServerStop, server_stop
from neuroq.config import Settings
from neuroq.jobs import Job, NewJob, is_path_safe, new_job_id, now_ms
from neuroq.store.base import JobStore, end_topic, job_topic, output_topic

RUNSYNC_MIN_WAIT_MS = 1_000
RUNSYNC_MAX_WAIT_MS = 300_000
STATUS_SYNC_MIN_WAIT_MS = 1_000

Check = Callable[[], Awaitable[Job | None]]


# -- request helpers -----------------------------------------------------------------------------


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _stop(request: Request) -> ServerStop:
    return server_stop(request, _store(request).notifier)


def _endpoint(request: Request) -> str:
    """Authenticate the client, then return the endpoint id from the path (404 when unusable).

    Authentication comes first so that an unauthenticated caller learns nothing about ids."""
    if not request.app.state.keys.check_client(request.headers.get("authorization")):
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or the bare key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    endpoint_id: str = request.path_params["endpoint_id"]
    if not is_path_safe(endpoint_id):
        raise HTTPException(
            404, "unknown endpoint: endpoint ids are 1-128 characters of A-Z a-z 0-9 _ -"
        )
    return endpoint_id


def _job_id(request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not is_path_safe(job_id):
        raise _job_not_found(job_id)
    return job_id


def _job_not_found(job_id: str) -> HTTPException:
    shown = job_id if is_path_safe(job_id) else "(invalid id)"
    return HTTPException(404, f"job {shown} not found (unknown, or expired after its retention)")


async def _get_job(store: JobStore, endpoint_id: str, job_id: str) -> Job:
    job = await store.get(endpoint_id, job_id)
    if job is None:
        raise _job_not_found(job_id)
    return job


async def _wait_job(
    store: JobStore,
    stop: ServerStop,
    job: Job,
    done: Callable[[Job], bool],
    timeout_ms: int,
    *,
    topic: str,
    since: int | None,
) -> Job:
    """Hold until `done(job)`, `timeout_ms` or the server's stop, then return the job as it is
    (404 if it vanished).
    `job` is the job as the caller read it, and `since` the version of `topic` read before that
    read (None when unknown: the job is then looked at again first)."""
    if done(job):
        return job
    endpoint_id, job_id = job.endpoint_id, job.id

    mark = store.ended_mark()

    async def check() -> Job | None:
        # Woken by its end in this process, the job is at hand: no read needed.
        job = store.recently_ended(endpoint_id, job_id, mark) or await _get_job(
            store, endpoint_id, job_id
        )
        return job if done(job) else None

    if timeout_ms > 0:
        found = await stop.wait_until(topic, check, timeout_ms / 1000, store.recheck_s, since=since)
        if found is not None:
            return found
    return await _get_job(store, endpoint_id, job_id)


def _status(job: Job) -> JSONResponse:
    return JSONResponse(job.status_object())


# -- submit --------------------------------------------------------------------------------------


async def _submit(
    request: Request, *, sync: bool, retention_ms: int, limit_bytes: int
) -> tuple[Job, int | None]:
    """Queue the job; returns it and the version of its end topic read just before the
    submit (None when an Idempotency-Key returned an earlier job instead)."""
    endpoint_id = _endpoint(request)
    idempotency_key = parse_idempotency_key(request)
    body = parse_json_object(await read_body_limited(request, limit_bytes))
    submit = parse_submit(body)
    new = NewJob(
        endpoint_id=endpoint_id,
        input_json=submit.input_json,
        policy=submit.policy,
        webhook=submit.webhook,
        s3_config_json=submit.s3_config_json,
        sync=sync,
        retention_ms=retention_ms,
        id=new_job_id(sync=sync),
    )
    store = _store(request)
    version = store.notifier.version(end_topic(new.id))
    job, _created = await store.submit(new, now_ms(), idempotency_key)
    return job, version if job.id == new.id else None


async def run(request: Request) -> Response:
    """POST /run: queue the job and answer at once with its id."""
    settings = _settings(request)
    job, _ = await _submit(
        request,
        sync=False,
        retention_ms=int(settings.retention_run_s * 1000),
        limit_bytes=settings.max_run_body_bytes,
    )
    response = _status(job)
    response.headers.update(await served.warning_headers(request, job.endpoint_id))
    return response


async def runsync(request: Request) -> Response:
    """POST /runsync: queue the job and hold the reply until it ends or `?wait` ms pass."""
    settings = _settings(request)
    wait_ms = parse_wait_ms(
        request, settings.runsync_default_wait_ms, RUNSYNC_MIN_WAIT_MS, RUNSYNC_MAX_WAIT_MS
    )
    job, version = await _submit(
        request,
        sync=True,
        retention_ms=int(max(settings.retention_sync_s * 1000, wait_ms)),
        limit_bytes=settings.max_runsync_body_bytes,
    )
    # Judged at submit, before the hold, like /run's.
    warning = await served.warning_headers(request, job.endpoint_id)
    job = await _wait_job(
        _store(request),
        _stop(request),
        job,
        _is_terminal,
        wait_ms,
        topic=end_topic(job.id),
        since=version,
    )
    response = _status(job)
    response.headers.update(warning)
    return response


def _is_terminal(job: Job) -> bool:
    return job.status.is_terminal


# -- status --------------------------------------------------------------------------------------


def _hold_over(seen_output_json: str | None) -> Callable[[Job], bool]:
    """When a status?wait hold that found the job with `seen_output_json` ends: once the job is
    terminal, or a progress update gave it an output other than that one. A job starting
    (IN_QUEUE -> IN_PROGRESS) or being requeued does not end it (a requeue clears the output,
    so `None` never counts as new), so one poll usually covers a short job from queue to end."""

    def over(job: Job) -> bool:
        if job.status.is_terminal:
            return True
        return job.output_json is not None and job.output_json != seen_output_json

    return over


async def status(request: Request) -> Response:
    """GET|POST /status/{id}. Extensions: `?wait=MS` holds until the job ends or its progress
    output changes (`_hold_over`); `?ttl=MS` shortens retention from now."""
    endpoint_id = _endpoint(request)
    job_id = _job_id(request)
    store = _store(request)
    settings = _settings(request)
    wait_ms = parse_wait_ms(request, 0, 0, settings.status_max_wait_ms)
    ttl_ms = parse_query_ms(request, "ttl")
    version = store.notifier.version(output_topic(job_id))
    # A hold on a job this process has just queued starts without reading it: as queued, it
    # has no output and has not ended unless its output topic moved (then it is read).
    queued = store.recently_submitted(endpoint_id, job_id, version) if wait_ms > 0 else None
    job = queued or await _get_job(store, endpoint_id, job_id)
    if wait_ms > 0 and not job.status.is_terminal:
        job = await _wait_job(
            store,
            _stop(request),
            job,
            _hold_over(job.output_json),
            wait_ms,
            topic=output_topic(job_id),
            since=version,
        )
    if ttl_ms is not None:
        await store.shorten_retention(endpoint_id, job_id, ttl_ms, now_ms())
    return _status(job)


async def status_sync(request: Request) -> Response:
    """GET|POST /status-sync/{id}?wait=MS: hold until the job ends (like runsync)."""
    endpoint_id = _endpoint(request)
    job_id = _job_id(request)
    settings = _settings(request)
    high_ms = max(STATUS_SYNC_MIN_WAIT_MS, settings.status_max_wait_ms)
    wait_ms = parse_wait_ms(request, high_ms, STATUS_SYNC_MIN_WAIT_MS, high_ms)
    store = _store(request)
    version = store.notifier.version(end_topic(job_id))
    job = await _get_job(store, endpoint_id, job_id)
    job = await _wait_job(
        store, _stop(request), job, _is_terminal, wait_ms, topic=end_topic(job_id), since=version
    )
    return _status(job)


# -- stream --------------------------------------------------------------------------------------


def _wants_event_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


async def stream(request: Request) -> Response:
    """GET|POST /stream/{id}: RunPod's consuming read, or server-sent events on request."""
    endpoint_id = _endpoint(request)
    job_id = _job_id(request)
    if _wants_event_stream(request):
        # The same events as the dashboard's /ui/stream/... (neuroq.api.sse).
        events = await sse.job_events(request, _store(request), endpoint_id, job_id)
        if events is None:
            raise _job_not_found(job_id)
        return events
    store = _store(request)
    wait_ms = parse_wait_ms(request, 0, 0, _settings(request).status_max_wait_ms)

    async def consume() -> tuple[Job, list[tuple[int, str]]] | None:
        result = await store.read_stream(endpoint_id, job_id)
        if result is None:
            raise _job_not_found(job_id)
        job, chunks = result
        return result if chunks or job.status.is_terminal else None

    result = await consume()
    if result is None and wait_ms > 0:
        result = await _stop(request).wait_until(
            job_topic(job_id), consume, wait_ms / 1000, store.recheck_s
        )
    if result is None:
        # Timed out (or the server stops) with nothing new; read once more for the current
        # state (and any chunk that landed at the last moment).
        result = await store.read_stream(endpoint_id, job_id)
        if result is None:
            raise _job_not_found(job_id)
    job, chunks = result
    # The chunks are stored as JSON text: splice them in rather than decode and re-encode.
    head = json.dumps({"id": job.id, "status": job.status.value})[:-1]
    body = head + ', "stream": [' + ",".join(chunk for _, chunk in chunks) + "]}"
    return Response(body, media_type="application/json")


# -- cancel, retry, purge, health ----------------------------------------------------------------
# None of these reads the body: RunPod's SDK posts them empty but labelled application/json.


async def cancel(request: Request) -> Response:
    endpoint_id = _endpoint(request)
    job_id = _job_id(request)
    job = await _store(request).cancel(endpoint_id, job_id, now_ms())
    if job is None:
        raise _job_not_found(job_id)
    return _status(job)


async def retry(request: Request) -> Response:
    """FAILED or TIMED_OUT -> IN_QUEUE, same id; other states give 400 (InvalidTransition)."""
    endpoint_id = _endpoint(request)
    job_id = _job_id(request)
    job = await _store(request).retry(endpoint_id, job_id, now_ms())
    if job is None:
        raise _job_not_found(job_id)
    return _status(job)


async def purge_queue(request: Request) -> Response:
    endpoint_id = _endpoint(request)
    removed = await _store(request).purge_queue(endpoint_id, now_ms())
    return JSONResponse({"removed": removed, "status": "completed"})


async def health(request: Request) -> Response:
    endpoint_id = _endpoint(request)
    return JSONResponse(await _store(request).health(endpoint_id, now_ms()))


_EP = "/v2/{endpoint_id}"
_READ = ["GET", "POST"]

ROUTES: list[BaseRoute] = [
    Route(f"{_EP}/run", run, methods=["POST"]),
    Route(f"{_EP}/runsync", runsync, methods=["POST"]),
    Route(f"{_EP}/status/{{job_id}}", status, methods=_READ),
    Route(f"{_EP}/status-sync/{{job_id}}", status_sync, methods=_READ),
    Route(f"{_EP}/stream/{{job_id}}", stream, methods=_READ),
    Route(f"{_EP}/cancel/{{job_id}}", cancel, methods=["POST"]),
    Route(f"{_EP}/retry/{{job_id}}", retry, methods=["POST"]),
    Route(f"{_EP}/purge-queue", purge_queue, methods=["POST"]),
    Route(f"{_EP}/health", health, methods=["GET"]),
]
