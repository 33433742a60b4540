"""OpenAI-compatible routes over jobs, under `/v2/{endpoint_id}/openai/v1/`, as RunPod serves them.

An OpenAI client whose base URL is `http://HOST:PORT/v2/<endpoint>/openai/v1` and whose API key
is one of our client keys can call `chat/completions`, `completions` and `models`. Each request
becomes a durable job like any other (it shows in `/status`, the dashboard and the metrics, and is
kept as a runsync job is) whose input is exactly
`{"openai_route": "/v1/chat/completions", "openai_input": <the request body>}`. The endpoint's
worker answers it: the NeuroQ handler, RunPod's worker-vllm, or any worker yielding the forms
openai_events.py reads.

- Without `stream`, the reply waits for the job to end and is its OpenAI response object.
- With `stream: true`, the reply is `text/event-stream`: every chunk the worker streams is
  relayed as `data: {chunk}` the moment it is stored, and the stream ends with `data: [DONE]`.
  Headers wait for the first chunk, so an error the worker answers at once still gets its status.
- A client that disconnects before the end cancels the job, so the worker stops decoding.
- When the server stops (neuroq.api.stopping), a request still waiting is answered 503
  `server_stopping` with Retry-After (OpenAI SDKs retry it), a stream already relaying ends with
  that error as its last event, and the job is cancelled, as when the client leaves.
- Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a bad
  body (naming the parameter), 401 for a bad key, 404 for an unknown model (the worker's answer),
  429 while the endpoint's queue holds `openai_max_queued` jobs, 503 when the store is
  unavailable, 504 when the job runs past its executionTimeout.

Only what any worker needs is checked here (a JSON object with a `model`, `messages` or
`prompt`, a boolean `stream`); every other parameter is the worker's to judge.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from neuroq.api.openai_events import (
    ApiError,
    Event,
    EventReader,
    error_of,
    events_from_output,
    failed_error,
    response_object,
)
from neuroq.api.schemas import parse_json_object, read_body_limited
from neuroq.api.stopping import ServerStop, server_stop
from neuroq.config import Settings
from neuroq.jobs import Job, JobStatus, NewJob, is_path_safe, new_job_id, now_ms
from neuroq.store.base import JobStore, end_topic, job_topic
from neuroq.store.errors import StoreUnavailable

log = logging.getLogger("neuroq.api")

# The routes a job's `openai_route` names (worker-vllm's names, without our path prefix).
CHAT_ROUTE = "/v1/chat/completions"
COMPLETIONS_ROUTE = "/v1/completions"
MODELS_ROUTE = "/v1/models"

#: an idle stream sends a comment this often, so proxies keep it open (OpenAI SDKs skip them)
KEEPALIVE_S = 15.0
#: how long one wait for a job lasts before it is looked at again (the wait itself has no end:
#: the job's executionTimeout or ttl ends it)
HOLD_S = 60.0
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: what a client that has gone away is "answered": nobody reads it, the metrics count it
CLIENT_GONE = 499

T = TypeVar("T")
Endpoint = Callable[[Request], Awaitable[Response]]


class _Refused(Exception):
    """A request answered with an error before any job work (or instead of it)."""

    def __init__(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        super().__init__(error.message)
        self.error, self.headers = error, headers


def _error_response(error: ApiError, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _openai_errors(route: Endpoint) -> Endpoint:
    """Answer this route's errors in OpenAI's shape rather than the job API's `{"error": str}`."""

    @functools.wraps(route)
    async def answer(request: Request) -> Response:
        try:
            return await route(request)
        except _Refused as exc:
            return _error_response(exc.error, exc.headers)
        except HTTPException as exc:  # from the shared body readers: 400, 413
            kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
            error = ApiError(exc.status_code, str(exc.detail), kind)
            return _error_response(error, dict(exc.headers or {}))
        except StoreUnavailable as exc:
            log.warning("%s %s refused: %s", request.method, request.url.path, exc)
            error = ApiError(503, str(exc), "server_error", None, "store_unavailable")
            return _error_response(error, {"Retry-After": str(exc.retry_after_s)})

    return answer


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _stop(request: Request) -> ServerStop:
    return server_stop(request, _store(request).notifier)


#: the error of a request the server's stop cut short; OpenAI SDKs retry a 503 by themselves
_STOPPING = ApiError(
    503, "the server is stopping; retry the request", "server_error", None, "server_stopping"
)
_STOPPING_HEADERS = {"Retry-After": "1"}


def _endpoint(request: Request) -> str:
    """Authenticate with the client keys (the job API's check), then the endpoint id."""
    if not request.app.state.keys.check_client(request.headers.get("authorization")):
        error = ApiError(
            401,
            "Incorrect API key provided: send one of this server's client keys as "
            "'Authorization: Bearer <key>'",
            code="invalid_api_key",
        )
        raise _Refused(error, {"WWW-Authenticate": "Bearer"})
    endpoint_id: str = request.path_params["endpoint_id"]
    if not is_path_safe(endpoint_id):
        message = "unknown endpoint: endpoint ids are 1-128 characters of A-Z a-z 0-9 _ -"
        raise _Refused(ApiError(404, message, code="endpoint_not_found"))
    return endpoint_id


def _bad(param: str, message: str) -> _Refused:
    return _Refused(ApiError(400, f"{param}: {message}", param=param))


def _check(body: dict[str, Any], route: str) -> None:
    """What every worker needs; the rest of the body is the worker's to judge."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model", "you must provide a model name (see /models)")
    if route == CHAT_ROUTE:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _bad("messages", "must be a non-empty list of {role, content} objects")
    elif body.get("prompt") is None:
        raise _bad("prompt", "is required")
    if body.get("stream") not in (None, True, False):
        raise _bad("stream", f"must be true or false, got {json.dumps(body['stream'])[:60]}")


async def _submit(request: Request, endpoint_id: str, route: str, body: Any) -> Job:
    settings, store = _settings(request), _store(request)
    limit = settings.openai_max_queued
    if limit > 0:
        stats = (await store.queue_stats()).get(endpoint_id)
        if stats is not None and stats.queued >= limit:
            message = (
                f"endpoint {endpoint_id} has {stats.queued} requests waiting (the limit is "
                f"{limit}); retry shortly"
            )
            error = ApiError(429, message, "requests", None, "rate_limit_exceeded")
            raise _Refused(error, {"Retry-After": "1"})
    payload = {"openai_route": route, "openai_input": body}
    new = NewJob(
        endpoint_id=endpoint_id,
        input_json=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        sync=True,
        retention_ms=int(settings.retention_sync_s * 1000),
        id=new_job_id(sync=True),
    )
    job, _ = await store.submit(new, now_ms())
    return job


@_openai_errors
async def chat_completions(request: Request) -> Response:
    return await _completion(request, CHAT_ROUTE)


@_openai_errors
async def completions(request: Request) -> Response:
    return await _completion(request, COMPLETIONS_ROUTE)


@_openai_errors
async def models(request: Request) -> Response:
    endpoint_id = _endpoint(request)
    job = await _submit(request, endpoint_id, MODELS_ROUTE, {})
    return await _whole(request, job)


async def _completion(request: Request, route: str) -> Response:
    endpoint_id = _endpoint(request)
    raw = await read_body_limited(request, _settings(request).max_runsync_body_bytes)
    body = parse_json_object(raw)
    _check(body, route)
    job = await _submit(request, endpoint_id, route, body)
    if body.get("stream") is True:
        return await _streamed(request, job)
    return await _whole(request, job)


# -- waiting -------------------------------------------------------------------------------------


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the body has been read: the next message says so)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _cancel(store: JobStore, job: Job) -> None:
    """Cancel a job whose client has gone, even from a task being cancelled itself."""
    with anyio.CancelScope(shield=True):
        try:
            await store.cancel(job.endpoint_id, job.id, now_ms())
        except Exception as exc:  # the client is gone either way; the job times out later
            log.warning("job %s: could not cancel after the client left: %s", job.id, exc)


async def _until(
    request: Request,
    store: JobStore,
    job: Job,
    topic: str,
    check: Callable[[], Awaitable[T | None]],
) -> T | None:
    """Hold until `check` returns something (re-run each time `topic` moves); None when the
    client disconnected first, in which case the job has been cancelled. When the server stops,
    the job is cancelled too and the request refused with 503 `server_stopping`."""
    stop = _stop(request)
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            waiting = asyncio.ensure_future(stop.wait_until(topic, check, HOLD_S, store.recheck_s))
            await asyncio.wait({gone, waiting}, return_when=asyncio.FIRST_COMPLETED)
            if waiting.done():
                found = waiting.result()
                if found is not None:
                    return found
                if stop.stopping:
                    await _cancel(store, job)
                    raise _Refused(_STOPPING, _STOPPING_HEADERS)
                continue
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
            await _cancel(store, job)
            return None
    finally:
        gone.cancel()


async def _current(store: JobStore, job: Job) -> Job:
    current = await store.get(job.endpoint_id, job.id)
    if current is None:  # deleted: it ended more than its retention ago
        raise _Refused(ApiError(500, f"job {job.id} no longer exists", "server_error"))
    return current


def _ended_error(job: Job) -> ApiError:
    """Why a job that did not complete gave no answer."""
    if job.status == JobStatus.FAILED:
        return failed_error(json.loads(job.error_json) if job.error_json is not None else None)
    if job.status == JobStatus.TIMED_OUT:
        limit_s = job.policy.execution_timeout_ms / 1000
        message = f"the request (job {job.id}) timed out: executionTimeout is {limit_s:g} s"
        return ApiError(504, message, "timeout_error", None, "timeout")
    return ApiError(
        500, f"the request (job {job.id}) was cancelled", "server_error", None, "cancelled"
    )


def _output(job: Job) -> Any:
    return json.loads(job.output_json) if job.output_json is not None else None


# -- replies -------------------------------------------------------------------------------------


async def _whole(request: Request, job: Job) -> Response:
    """The response object once the job has ended."""
    store = _store(request)

    async def ended() -> Job | None:
        current = await _current(store, job)
        return current if current.status.is_terminal else None

    final = await _until(request, store, job, end_topic(job.id), ended)
    if final is None:
        return Response(status_code=CLIENT_GONE)
    headers = {"x-request-id": job.id}
    if final.status != JobStatus.COMPLETED:
        return _error_response(_ended_error(final), headers)
    answer = response_object(_output(final))
    error = error_of(answer)
    if error is not None:
        return _error_response(error, headers)
    if not isinstance(answer, dict):
        error = ApiError(502, "the worker returned no OpenAI response object", "server_error")
        return _error_response(error, headers)
    return JSONResponse(answer, headers=headers)


class _Gone(Exception):
    """The job was deleted while its stream was open."""


async def _streamed(request: Request, job: Job) -> Response:
    """Server-sent events relaying the job's stream; an error before the first chunk is
    answered as a plain error response with its status."""
    store, stop = _store(request), _stop(request)
    reader = EventReader()
    last_seq = 0

    async def fresh() -> tuple[Job, list[Event]] | None:
        nonlocal last_seq
        read = await store.read_stream(job.endpoint_id, job.id, after_seq=last_seq)
        if read is None:
            raise _Gone
        current, chunks = read
        events: list[Event] = []
        for seq, chunk_json in chunks:
            last_seq = max(last_seq, seq)
            stored = json.loads(chunk_json)
            events += reader.feed(stored.get("output") if isinstance(stored, dict) else stored)
        return (current, events) if events or current.status.is_terminal else None

    headers = {"x-request-id": job.id}
    try:
        first = await _until(request, store, job, job_topic(job.id), fresh)
    except _Gone:
        first = (await _current(store, job), [])
    if first is None:
        return Response(status_code=CLIENT_GONE)
    current, events = first
    if not events and current.status.is_terminal:
        if current.status != JobStatus.COMPLETED:
            return _error_response(_ended_error(current), headers)
        # Ended before anything reached the stream: its output holds what it yielded.
        events = reader.flush() or events_from_output(_output(current))
        if not events:
            error = ApiError(502, "the worker returned no OpenAI stream", "server_error")
            return _error_response(error, headers)
    if events[0].error is not None:
        return _error_response(events[0].error, headers)

    async def relay() -> AsyncIterator[bytes]:
        finished = False
        pending, state = events, current
        try:
            while True:
                for event in pending:
                    yield event.encode()
                    if event.done or event.error is not None:
                        finished = True
                        return
                if state.status.is_terminal:
                    finished = True
                    for event in reader.flush():
                        yield event.encode()
                        if event.done or event.error is not None:
                            return
                    if state.status == JobStatus.COMPLETED:
                        yield Event("[DONE]").encode()
                    else:
                        yield Event("", _ended_error(state)).encode()
                    return
                try:
                    read = await stop.wait_until(
                        job_topic(job.id), fresh, KEEPALIVE_S, store.recheck_s
                    )
                except _Gone:
                    finished = True
                    gone = ApiError(500, f"job {job.id} no longer exists", "server_error")
                    yield Event("", gone).encode()
                    return
                if read is None and stop.stopping:
                    yield Event("", _STOPPING).encode()  # `finally` cancels the job
                    return
                if read is None:
                    pending = []
                    yield b": keepalive\n\n"
                else:
                    state, pending = read
        finally:
            if not finished:  # the client went away mid-stream, or the server stops
                await _cancel(store, job)

    return StreamingResponse(
        relay(), media_type="text/event-stream", headers={**_STREAM_HEADERS, **headers}
    )


_BASE = "/v2/{endpoint_id}/openai/v1"

ROUTES: list[BaseRoute] = [
    Route(f"{_BASE}/chat/completions", chat_completions, methods=["POST"]),
    Route(f"{_BASE}/completions", completions, methods=["POST"]),
    Route(f"{_BASE}/models", models, methods=["GET"]),
]
