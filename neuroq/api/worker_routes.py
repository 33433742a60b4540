"""The worker-facing half of the RunPod protocol (docs/worker-protocol.md), as the `runpod` 1.12
SDK and our own worker runtime speak it.

    GET  /v2/{ep}/job-take/{worker}            long-poll, one job object or 204
    GET  /v2/{ep}/job-take-batch/{worker}      long-poll, a list of at most batch_size jobs or 204
    POST /v2/{ep}/job-done/{worker}/{job}      final result or progress update
    POST /v2/{ep}/job-done-batch/{worker}      final results of several jobs (our extension)
    POST /v2/{ep}/job-stream/{worker}/{job}    one stream chunk
    POST /v2/{ep}/job-log/{worker}/{job}       a batch of the job's log lines (our extension)
    GET  /v2/{ep}/job-stop/{worker}            long-poll, {"jobsToStop": [...]} or 204
    GET  /v2/{ep}/ping/{worker}                heartbeat, a fitness failure report, or goodbye

The SDK builds these URLs by pasting ids into templates and appending `&key=value`, so the routes
tolerate what careless templates produce (docs/worker-protocol.md, Tolerated URL forms): a last
path segment with the query glued on (`w1&job_in_progress=0`), empty query pairs and unknown
parameters. A worker id left as the literal `$RUNPOD_POD_ID` (the SDK substitutes only `$ID` in
the job-take template) names no worker, so it is refused with a 400 saying how to fix the
template, unless the server accepts such workers under a per-host alias
(Settings.anonymous_workers). The SDK loses a result on any
4xx, so a well-formed post is never refused; and it re-asks at once after a 204, so job-take and
job-stop hold idle workers instead of answering; they end early with a 204 when the server stops
(neuroq.api.stopping).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq import strict_json
from neuroq.api.errors import error_response
from neuroq.api.schemas import BodyTooLarge, read_capped
from neuroq.api.stopping import ServerStop
from neuroq.config import Settings
from neuroq.jobs import Job, is_path_safe, now_ms
from neuroq.store.base import (
    RECYCLING,
    UNHEALTHY,
    Holder,
    JobStore,
    PostedResult,
    TakeLook,
    queue_topic,
    stop_topic,
    wait_until,
)

log = logging.getLogger("neuroq.api.worker")

#: the placeholder the SDK leaves unsubstituted when a job-take template names it
POD_ID_PLACEHOLDER = "$RUNPOD_POD_ID"
#: a ping's status saying the worker stops cleanly (our extension)
LEAVING = "leaving"
#: largest batch handed out at once, whatever batch_size asks for
MAX_BATCH_SIZE = 100
MAX_WORKER_ID_LEN = 256
#: least time between two job-stop replies offering the same ids to one worker
REOFFER_S = 1.0
#: results and stream chunks record contact from their worker at most this often (and at most
#: ten times per lease): a row update per post would double the cost of a result
RESULT_CONTACT_MS = 1000

#: the most one job-log post may carry (the per-attempt caps, LogLimits, are far below it)
MAX_LOG_BODY_BYTES = 4 * 1024 * 1024
MAX_LOG_LINES_PER_POST = 1_000

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class _Gone:
    """Marker: the long-poll ended without jobs (client left, or the worker is recycling)."""


_GONE = _Gone()


@dataclass(frozen=True)
class WorkerCall:
    """One authenticated worker request, with the worker id resolved and the query merged."""

    endpoint_id: str
    worker_id: str
    params: dict[str, str]
    settings: Settings
    store: JobStore
    #: the id a `$RUNPOD_POD_ID` take from this worker's host was given (see anonymous_worker_id);
    #: None unless the server accepts anonymous workers
    alias: str | None
    #: job-done and job-stream only
    job_id: str | None = None
    #: the attempt our own worker names on its posts (`attempt=N`); the SDK names none
    attempt: int | None = None

    @property
    def lease_ms(self) -> int:
        return int(self.settings.worker_lost_s * 1000)

    @property
    def holder(self) -> Holder:
        """The fence this worker's writes must pass (neuroq.store.base.Holder)."""
        return Holder(self.worker_id, self.alias, self.attempt)


def split_glued(segment: str) -> tuple[str, list[tuple[str, str]]]:
    """Split a path segment that carries a query glued on with `&` (a template without `?`).

    >>> split_glued("w1&job_in_progress=0&")
    ('w1', [('job_in_progress', '0')])
    """
    value, _, rest = segment.partition("&")
    return value, parse_qsl(rest, keep_blank_values=True)


def anonymous_worker_id(request: Request) -> str:
    """The id given to a worker whose job-take URL still says `$RUNPOD_POD_ID`.

    It cannot be learned from the request, so it is derived from the peer address: stable across
    the worker's take and stop polls (both come from the same template), but shared by every such
    worker on one host, so the fence cannot tell them apart. Used only when the server accepts
    anonymous workers (Settings.anonymous_workers).
    """
    host = request.client.host if request.client else "unknown"
    return "anon-" + (_UNSAFE.sub("-", host).strip("-") or "unknown")


def _attempt(params: dict[str, str]) -> int | None:
    raw = params.get("attempt")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 9:
        raise _BadRequest(f"attempt must be a non-negative integer, got {raw!r}")
    return int(raw)


#: why a `$RUNPOD_POD_ID` worker id is refused, and how to fix it (job-stop derives its URL
#: from the job-take template, so the same text serves both, and any hand-made URL)
ANONYMOUS_REFUSED = (
    "the worker id in this URL is the literal `$RUNPOD_POD_ID`, so the server cannot tell which "
    "worker this is and could not keep another worker's late result from overwriting its "
    "jobs. The runpod SDK substitutes only `$ID` in RUNPOD_WEBHOOK_GET_JOB (and derives its "
    "job-stop URL from it): write `.../job-take/$ID?gpu=local` there, as `neuroq worker-env` "
    "prints, and the SDK puts its RUNPOD_POD_ID in. To accept such workers anyway, fenced per "
    "host only, start the server with NEUROQ_ANONYMOUS_WORKERS=true."
)


def _resolve_worker_id(request: Request, segment: str, settings: Settings) -> str:
    if segment == POD_ID_PLACEHOLDER:
        if not settings.anonymous_workers:
            raise _Anonymous(ANONYMOUS_REFUSED)
        return anonymous_worker_id(request)
    if not segment or len(segment) > MAX_WORKER_ID_LEN:
        raise _BadRequest(f"worker id must be 1..{MAX_WORKER_ID_LEN} characters")
    return segment


class _BadRequest(Exception):
    """A worker request that cannot be understood; the message names the field."""


class _Anonymous(_BadRequest):
    """A worker id nobody substituted, from a server that accepts no anonymous workers."""


async def _worker_call(
    request: Request, segment_param: str, *, delay_refusal: bool
) -> WorkerCall | Response:
    """Authenticate and parse; returns the error response to send when either fails.
    `delay_refusal` (job-take and job-stop, which the SDK re-asks at once) holds back the
    refusals a retry cannot cure: a bad key, an unsubstituted worker id."""
    settings: Settings = request.app.state.settings
    if not request.app.state.keys.check_worker(request.headers.get("authorization")):
        if delay_refusal:
            # The SDK re-asks at once on a 401; the delay keeps a misconfigured worker from
            # spinning.
            await asyncio.sleep(settings.worker_auth_failure_delay_s)
        return error_response(401, "invalid or missing worker key in the Authorization header")
    endpoint_id = request.path_params["endpoint_id"]
    if not is_path_safe(endpoint_id):
        # The same rule as the client routes: no job can live on such an endpoint.
        return error_response(
            404, "unknown endpoint: endpoint ids are 1-128 characters of A-Z a-z 0-9 _ -"
        )
    # The glued query sits on the last segment: the worker id, or the job id after it.
    segment, glued = split_glued(request.path_params[segment_param])
    params = dict(request.query_params)
    params.update(glued)
    job_id = None
    worker_segment = segment
    if segment_param == "job_id":
        job_id, worker_segment = segment, request.path_params["worker_id"]
    try:
        worker_id = _resolve_worker_id(request, worker_segment, settings)
        attempt = _attempt(params)
    except _Anonymous as exc:
        _warn_anonymous(request, endpoint_id)
        if delay_refusal:
            await asyncio.sleep(settings.worker_auth_failure_delay_s)
        return error_response(400, str(exc))
    except _BadRequest as exc:
        return error_response(400, str(exc))
    return WorkerCall(
        endpoint_id=endpoint_id,
        worker_id=worker_id,
        params=params,
        settings=settings,
        store=request.app.state.store,
        alias=anonymous_worker_id(request) if settings.anonymous_workers else None,
        job_id=job_id,
        attempt=attempt,
    )


def _warn_anonymous(request: Request, endpoint_id: str) -> None:
    """Log a refused `$RUNPOD_POD_ID` worker once per host and process: the SDK hides the 400
    (it logs it at debug level and asks again), so the server's log is where an operator sees
    why such a worker gets no jobs."""
    warned: set[str] | None = getattr(request.app.state, "anonymous_warned", None)
    if warned is None:
        warned = request.app.state.anonymous_warned = set()
    host = request.client.host if request.client else "unknown"
    if host in warned:
        return
    if len(warned) >= 1_000:
        warned.clear()
    warned.add(host)
    log.warning(
        "refused worker requests from %s on %s with the literal worker id %s: %s",
        host,
        endpoint_id,
        POD_ID_PLACEHOLDER,
        ANONYMOUS_REFUSED,
    )


def _flag(params: dict[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("1", "true"):
        return True
    if lowered in ("0", "false"):
        return False
    raise _BadRequest(f"{name} must be 0 or 1 (or true/false), got {raw!r}")


def _batch_size(params: dict[str, str]) -> int:
    raw = params.get("batch_size")
    if raw is None or raw == "":
        return 1
    try:
        size = int(raw)
    except ValueError:
        raise _BadRequest(f"batch_size must be a positive integer, got {raw!r}") from None
    if size < 1:
        raise _BadRequest(f"batch_size must be a positive integer, got {raw!r}")
    return min(size, MAX_BATCH_SIZE)


def _take_hold_s(params: dict[str, str], longest_s: float) -> float:
    """How long a take may wait for a job: the server's hold, or less when `wait=MS` asks (our
    extension: a `--burst` worker asks briefly, so it learns soon that the queue is empty)."""
    raw = params.get("wait")
    if raw is None or raw == "":
        return longest_s
    if not raw.isdigit() or len(raw) > 9:
        raise _BadRequest(f"wait must be a non-negative integer of milliseconds, got {raw!r}")
    return min(int(raw) / 1000, longest_s)


async def _is_recycling(call: WorkerCall) -> bool:
    info = await call.store.worker(call.worker_id)
    return info is not None and info.state == RECYCLING


# -- job-take ------------------------------------------------------------------------------------


async def job_take(request: Request) -> Response:
    return await _take(request, batch=False)


async def job_take_batch(request: Request) -> Response:
    return await _take(request, batch=True)


async def _take(request: Request, *, batch: bool) -> Response:
    call = await _worker_call(request, "worker_id", delay_refusal=True)
    if isinstance(call, Response):
        return call
    store, settings = call.store, call.settings
    try:
        in_progress = _flag(call.params, "job_in_progress")
        limit = _batch_size(call.params) if batch else 1
        hold_s = _take_hold_s(call.params, settings.job_take_hold_s)
    except _BadRequest as exc:
        return error_response(400, str(exc))
    stop = _server_stop(request)
    first = True

    async def check() -> list[Job] | _Gone | None:
        nonlocal first
        if stop.stopping or await request.is_disconnected():
            return _GONE
        # Each look is one transaction. The first also records contact: a take renews no
        # lease (=1 says the worker holds some job, not which, and =0 that it holds none, so
        # its stop signals are withdrawn); a delivery that never arrived then lapses.
        look = TakeLook(
            call.endpoint_id,
            call.worker_id,
            limit,
            now_ms(),
            call.lease_ms,
            touch=first,
            held_job_ids=[] if in_progress is False else None,
        )
        recycling, jobs = await store.worker_take(look)
        first = False
        if recycling:
            return _GONE
        return jobs or None

    topic = queue_topic(call.endpoint_id)
    with stop.holding(topic):
        result: list[Job] | _Gone | None = await wait_until(
            store.notifier, topic, check, hold_s, store.recheck_s
        )
    if result is None or isinstance(result, _Gone):
        return Response(status_code=204)
    if await request.is_disconnected():
        # Nobody will read this reply: put the jobs back without counting a retry. A disconnect
        # after this check is caught later by the lease running out (docs/worker-protocol.md,
        # job-take).
        released = await store.release([j.id for j in result], call.worker_id, now_ms())
        log.info(
            "released %d job(s) taken by worker %s on %s: the worker left before the reply",
            released,
            call.worker_id,
            call.endpoint_id,
        )
        return Response(status_code=204)
    for job in result:
        log.info("job %s on %s given to worker %s", job.id, call.endpoint_id, call.worker_id)
    if batch:
        return JSONResponse([job.worker_payload() for job in result])
    return JSONResponse(result[0].worker_payload())


# -- job-done / job-stream -----------------------------------------------------------------------


def _decode_object(raw: bytes, what: str) -> dict[str, Any]:
    if not raw.strip():
        raise _BadRequest(f"{what} body is empty; expected a JSON object")
    try:
        value = strict_json.loads(raw, what)
    except strict_json.JSONRejected as exc:
        raise _BadRequest(f"{what} body is not acceptable JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _BadRequest(f"{what} body must be a JSON object, got {type(value).__name__}")
    return value


def encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _fail(call: WorkerCall, job_id: str, message: str) -> None:
    """End a job whose result cannot be stored, so its client is not left waiting; only when
    the poster holds the job, so a stranger's bad post cannot end someone else's job."""
    job = await call.store.finish(
        job_id,
        output_json=None,
        error_json=encode(message),
        now_ms=now_ms(),
        holder=call.holder,
        endpoint_id=call.endpoint_id,
    )
    if job is not None:
        log.info("job %s on %s FAILED: %s", job_id, call.endpoint_id, message)


def _no_job(call: WorkerCall) -> Response:
    return error_response(404, f"no job {call.job_id!r} on endpoint {call.endpoint_id!r}")


def _why_ignored(call: WorkerCall, job: Job) -> str:
    """Why a post for a known job changed nothing: it has ended, or the poster is not the
    worker (or attempt) that holds it now."""
    if job.status.is_terminal:
        return f"job {job.id} is {job.status.value} already"
    if job.worker_id is None:
        return f"job {job.id} is back in the queue: worker {call.worker_id} no longer holds it"
    return f"job {job.id} is held by another worker or attempt, not by {call.worker_id}"


def _ignored(call: WorkerCall, job: Job) -> Response:
    """The reply to a fenced-out post: 200, so the SDK neither retries nor counts a lost
    result (it retries only 5xx, and logs a 4xx as a failure), with a marker saying why."""
    reason = _why_ignored(call, job)
    log.info("post from worker %s on %s ignored: %s", call.worker_id, call.endpoint_id, reason)
    return JSONResponse({"ignored": reason})


async def _read_post(request: Request, call: WorkerCall, what: str) -> dict[str, Any] | Response:
    """The size-capped JSON object body of job-done or job-stream. A body that cannot be
    stored fails the job: that beats leaving its client to wait for the execution timeout."""
    job_id = call.job_id or ""
    limit = call.settings.max_result_body_bytes
    try:
        raw = await read_capped(request, limit)
    except BodyTooLarge:
        message = f"result too large: {what} body exceeds {limit} bytes (max_result_body_bytes)"
        await _fail(call, job_id, message)
        return error_response(413, message)
    try:
        return _decode_object(raw, what)
    except _BadRequest as exc:
        await _fail(call, job_id, f"worker sent an unreadable {what} body: {exc}")
        return error_response(400, str(exc))


async def job_done(request: Request) -> Response:
    call = await _worker_call(request, "job_id", delay_refusal=False)
    if isinstance(call, Response):
        return call
    job_id = call.job_id or ""
    body = await _read_post(request, call, "job-done")
    if isinstance(body, Response):
        return body
    store, now = call.store, now_ms()
    if body.get("status") == "IN_PROGRESS":
        # A progress update; these travel on their own thread in the SDK and may land after the
        # final result, which the store ignores (docs/worker-protocol.md, job-done). It renews its
        # job's lease.
        reply = await _progress(call, job_id, body, now)
    else:
        job, outcome = await _finish(call, job_id, body, now, call.holder)
        if outcome == "unknown":
            return _no_job(call)
        reply = JSONResponse({}) if job is None else _ignored(call, job)
    if body.get("stopPod") is True:
        await store.touch_worker(call.endpoint_id, call.worker_id, now, state=RECYCLING)
        log.info("worker %s on %s asked to be recycled", call.worker_id, call.endpoint_id)
        # Wake its pending take and stop polls so they answer 204 at once (docs/worker-protocol.md,
        # Worker states and liveness).
        store.notifier.publish_all({queue_topic(call.endpoint_id), stop_topic(call.worker_id)})
    else:
        await _sign_of_life(request, call, now)
    return reply


async def _progress(call: WorkerCall, job_id: str, body: dict[str, Any], now: int) -> Response:
    if "output" in body and await call.store.record_progress(
        job_id, encode(body["output"]), now, call.holder, call.lease_ms
    ):
        return JSONResponse({})
    job = await call.store.get(call.endpoint_id, job_id)
    if job is None:
        return _no_job(call)
    if (
        "output" not in body
        and not job.status.is_terminal
        and job.worker_id
        in (
            call.worker_id,
            call.alias,
        )
    ):
        return JSONResponse({})  # a progress update without output: nothing to store
    return _ignored(call, job)


async def _finish(
    call: WorkerCall, job_id: str, body: dict[str, Any], now: int, holder: Holder
) -> tuple[Job | None, str]:
    """Store a final result. Returns (None, "finished"), or the job as it stands with
    "discarded" (it had ended already) or "ignored" (the poster does not hold its current
    attempt: a zombie whose lease lapsed, or a stranger), or (None, "unknown").

    Only the holder's result counts: the store fences the write with the poster's id, its
    anonymous alias and the attempt it names (neuroq.store.base.Holder). The first terminal
    transition wins. One transaction in the usual case: the job is looked up only when the
    result did not end it."""
    posted = _posted(job_id, body, holder)
    finished = await call.store.finish(
        job_id,
        output_json=posted.output_json,
        error_json=posted.error_json,
        now_ms=now,
        holder=holder,
        endpoint_id=call.endpoint_id,
    )
    if finished is not None:
        _log_finished(call, finished)
        return None, "finished"
    return await _not_finished(call, job_id)


def _log_finished(call: WorkerCall, job: Job) -> None:
    log.info(
        "job %s on %s %s by worker %s", job.id, call.endpoint_id, job.status.value, call.worker_id
    )


async def _not_finished(call: WorkerCall, job_id: str) -> tuple[Job | None, str]:
    """Why a result did not end its job: the job as it stands with "discarded" (it had ended
    already) or "ignored" (the poster does not hold it), or (None, "unknown")."""
    job = await call.store.get(call.endpoint_id, job_id)
    if job is None:
        return None, "unknown"
    return job, "discarded" if job.status.is_terminal else "ignored"


async def job_done_batch(request: Request) -> Response:
    """POST /job-done-batch/{worker}: our extension for the final results of several jobs in one
    request, `[{"id": ..., "attempt": N?, "result": <job-done body>}, ...]`. Each result is
    stored exactly as job-done stores it; the reply says what became of each:
    {"finished"|"discarded"|"ignored"|"unknown": [ids]}. Our worker sends a batch only while an
    earlier post is still in flight, so a worker at concurrency 64 makes a few requests per
    batch of jobs instead of one per job."""
    call = await _worker_call(request, "worker_id", delay_refusal=False)
    if isinstance(call, Response):
        return call
    limit = call.settings.max_result_body_bytes
    try:
        raw = await read_capped(request, limit)
    except BodyTooLarge:
        return error_response(413, f"job-done-batch body exceeds {limit} bytes")
    try:
        items = strict_json.loads(raw, "job-done-batch")
    except strict_json.JSONRejected as exc:
        return error_response(400, f"job-done-batch body is not acceptable JSON: {exc}")
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH_SIZE:
        return error_response(
            400, f"job-done-batch body must be a JSON array of 1 to {MAX_BATCH_SIZE} results"
        )
    for index, item in enumerate(items):
        problem = _batch_item_problem(item)
        if problem is not None:
            return error_response(400, f"job-done-batch item {index}: {problem}")
    outcomes: dict[str, list[str]] = {"finished": [], "discarded": [], "ignored": [], "unknown": []}
    now = now_ms()
    results = [
        _posted(item["id"], item["result"], Holder(call.worker_id, call.alias, item.get("attempt")))
        for item in items
    ]
    # One transaction for the whole batch: on PostgreSQL a commit (its WAL flush and NOTIFY)
    # is most of what a finish costs.
    finished = await call.store.finish_many(results, now_ms=now, endpoint_id=call.endpoint_id)
    for result, job in zip(results, finished, strict=True):
        if job is not None:
            _log_finished(call, job)
            outcomes["finished"].append(result.job_id)
            continue
        current, outcome = await _not_finished(call, result.job_id)  # rare
        if current is not None:
            log.info(
                "result from worker %s ignored: %s", call.worker_id, _why_ignored(call, current)
            )
        outcomes[outcome].append(result.job_id)
    await _sign_of_life(request, call, now)
    return JSONResponse(outcomes)


def _posted(job_id: str, body: dict[str, Any], holder: Holder) -> PostedResult:
    """A job-done body as the store takes it. The SDK drops falsy errors before posting, so
    only a truthy one means FAILED."""
    error = body.get("error")
    return PostedResult(
        job_id=job_id,
        output_json=encode(body["output"]) if "output" in body else None,
        error_json=encode(error) if error else None,
        holder=holder,
    )


def _batch_item_problem(item: Any) -> str | None:
    if not isinstance(item, dict):
        return "must be an object with `id` and `result`"
    job_id = item.get("id")
    if not isinstance(job_id, str) or not job_id:
        return "`id` must be a non-empty string"
    attempt = item.get("attempt")
    if attempt is not None and (
        not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 0
    ):
        return "`attempt` must be a non-negative integer"
    result = item.get("result")
    if not isinstance(result, dict):
        return "`result` must be a JSON object (a job-done body)"
    if result.get("status") == "IN_PROGRESS":
        return "`result` is a progress update; post those to job-done"
    return None


async def job_stream(request: Request) -> Response:
    call = await _worker_call(request, "job_id", delay_refusal=False)
    if isinstance(call, Response):
        return call
    body = await _read_post(request, call, "job-stream")
    if isinstance(body, Response):
        return body
    job_id, now = call.job_id or "", now_ms()
    # Stored as posted ({"output": chunk} from the SDK); /stream hands the objects back as-is.
    # A chunk is evidence that its poster holds the job: it renews that job's lease.
    seq = await call.store.append_stream(job_id, encode(body), now, call.holder, call.lease_ms)
    if seq is None:
        job = await call.store.get(call.endpoint_id, job_id)
        if job is None:
            return _no_job(call)
        return _ignored(call, job)
    await _sign_of_life(request, call, now)
    return JSONResponse({})


async def job_log(request: Request) -> Response:
    """POST /job-log/{worker}/{job}: our extension, a batch of the job's log lines,
    `{"lines": [{"at": ms, "level": "INFO", "line": "..."}], "truncated": false}`. Fenced like
    job-stream, except that the holder of the attempt may still post for a minute after its
    result (its last lines may follow the result). The store cuts long lines, caps each attempt
    and marks where it dropped lines. A bad body is refused and, unlike a bad result, fails
    nothing: logs are a side channel."""
    call = await _worker_call(request, "job_id", delay_refusal=False)
    if isinstance(call, Response):
        return call
    try:
        raw = await read_capped(request, MAX_LOG_BODY_BYTES)
    except BodyTooLarge:
        return error_response(413, f"job-log body exceeds {MAX_LOG_BODY_BYTES} bytes")
    now = now_ms()
    try:
        lines, truncated = _log_lines(_decode_object(raw, "job-log"), now)
    except _BadRequest as exc:
        return error_response(400, str(exc))
    job_id = call.job_id or ""
    stored = await call.store.append_logs(
        job_id, lines, now, call.holder, truncated=truncated, lease_ms=call.lease_ms
    )
    if stored is None:
        job = await call.store.get(call.endpoint_id, job_id)
        if job is None:
            return _no_job(call)
        return _ignored(call, job)
    await _sign_of_life(request, call, now)
    return JSONResponse({"stored": stored})


def _log_lines(body: dict[str, Any], now: int) -> tuple[list[tuple[int, str, str]], bool]:
    """The (at_ms, level, line) records of a job-log body; `at` defaults to now and `level`
    to INFO."""
    items = body.get("lines", [])
    if not isinstance(items, list) or len(items) > MAX_LOG_LINES_PER_POST:
        raise _BadRequest(f"`lines` must be an array of at most {MAX_LOG_LINES_PER_POST} objects")
    truncated = body.get("truncated", False)
    if not isinstance(truncated, bool):
        raise _BadRequest("`truncated` must be true or false")
    lines: list[tuple[int, str, str]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("line"), str):
            raise _BadRequest(f"lines[{index}] must be an object with a string `line`")
        at = item.get("at", now)
        if not isinstance(at, int) or isinstance(at, bool) or not 0 <= at < 2**53:
            raise _BadRequest(f"lines[{index}].at must be ms since the epoch")
        level = item.get("level", "INFO")
        if not isinstance(level, str) or not level:
            raise _BadRequest(f"lines[{index}].level must be a non-empty string")
        lines.append((at, level.upper(), item["line"]))
    return lines, truncated


async def _sign_of_life(request: Request, call: WorkerCall, now: int) -> None:
    """Record contact from the worker (so it is not counted lost), unless this process did so
    for it within RESULT_CONTACT_MS (or a tenth of the lease, if shorter). Contact renews no
    lease: only a ping naming a job, or a post for it, does."""
    touched: dict[str, int] | None = getattr(request.app.state, "worker_touched_ms", None)
    if touched is None:
        touched = request.app.state.worker_touched_ms = {}
    last = touched.get(call.worker_id)
    if last is not None and now - last < min(RESULT_CONTACT_MS, call.lease_ms // 10):
        return
    await call.store.touch_worker(call.endpoint_id, call.worker_id, now)
    if len(touched) >= 10_000:  # worker ids come and go; forget them all now and then
        touched.clear()
    touched[call.worker_id] = now


# -- job-stop and ping ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Offer:
    ids: tuple[str, ...]
    #: loop time before which the same ids are not offered again
    quiet_until: float


def _stop_offers(request: Request) -> dict[str, _Offer]:
    """What each worker was last told to stop, for this process (kept on the app's state)."""
    offers: dict[str, _Offer] | None = getattr(request.app.state, "worker_stop_offers", None)
    if offers is None:
        offers = request.app.state.worker_stop_offers = {}
    return offers


async def job_stop(request: Request) -> Response:
    call = await _worker_call(request, "worker_id", delay_refusal=True)
    if isinstance(call, Response):
        return call
    store = call.store
    # Contact only: an open stop poll says nothing about which jobs the worker has.
    await store.touch_worker(call.endpoint_id, call.worker_id, now_ms())
    offers = _stop_offers(request)
    previous = offers.get(call.worker_id)
    loop = asyncio.get_running_loop()
    stop = _server_stop(request)

    # While the worker still holds a stopped job, the store keeps returning it: one delivery is
    # not enough, the SDK drops a stop id that arrives before the job's task starts
    # (docs/worker-protocol.md, job-stop).
    # But the SDK asks again at once after a reply with ids, and it only lets go of the job on
    # its next ping or take, so the same ids are re-offered at most once per REOFFER_S (the
    # SDK's own pace after an empty reply) instead of in a hot loop; a new id goes out at once.
    async def check() -> list[str] | _Gone | None:
        ids = await store.jobs_to_stop(call.worker_id)
        if ids and (
            previous is None or tuple(ids) != previous.ids or loop.time() >= previous.quiet_until
        ):
            return ids
        if stop.stopping or await request.is_disconnected() or await _is_recycling(call):
            return _GONE
        return None

    topic = stop_topic(call.worker_id)
    with stop.holding(topic):
        found: list[str] | _Gone | None = await wait_until(
            store.notifier, topic, check, call.settings.job_stop_hold_s, store.recheck_s
        )
    if not isinstance(found, list):
        offers.pop(call.worker_id, None)
        return Response(status_code=204)
    offers[call.worker_id] = _Offer(tuple(found), loop.time() + REOFFER_S)
    # Logged when first offered: the re-offers of a job the worker still holds are routine.
    fresh = [j for j in found if previous is None or j not in previous.ids]
    if fresh:
        log.info("stop signal for job(s) %s sent to worker %s", ",".join(fresh), call.worker_id)
    return JSONResponse({"jobsToStop": found})


async def ping(request: Request) -> Response:
    call = await _worker_call(request, "worker_id", delay_refusal=False)
    if isinstance(call, Response):
        return call
    status = call.params.get("status", "").lower()
    if status == LEAVING:
        return await _leave(request, call)
    held = [j for j in call.params.get("job_id", "").split(",") if j]
    unhealthy = status == UNHEALTHY
    await call.store.touch_worker(
        call.endpoint_id,
        call.worker_id,
        now_ms(),
        held_job_ids=held,
        state=UNHEALTHY if unhealthy else None,
        lease_ms=call.lease_ms,
        alias=call.alias,
    )
    if unhealthy:
        # The reason is the worker's own text (a fitness check), never job data.
        log.warning(
            "worker %s on %s reported unhealthy: check=%s reason=%s",
            call.worker_id,
            call.endpoint_id,
            call.params.get("check", "")[:64],
            call.params.get("reason", "")[:256],
        )
    return JSONResponse({})


async def _leave(request: Request, call: WorkerCall) -> Response:
    """A worker that stops cleanly says so (`status=leaving`, our extension; the SDK never sends
    it): it is forgotten now, instead of being logged lost by the sweep `worker_lost_s` later.
    Jobs it still holds (abandoned after its grace period) keep their leases and are requeued
    when those lapse, as for any worker that stops pinging them."""
    left = await call.store.forget_worker(call.endpoint_id, call.worker_id)
    _stop_offers(request).pop(call.worker_id, None)
    touched: dict[str, int] | None = getattr(request.app.state, "worker_touched_ms", None)
    if touched is not None:
        touched.pop(call.worker_id, None)
    if left:
        log.info("worker %s on %s left", call.worker_id, call.endpoint_id)
    return JSONResponse({})


def _server_stop(request: Request) -> ServerStop:
    stop: ServerStop = request.app.state.server_stop
    return stop


ROUTES: list[BaseRoute] = [
    Route("/v2/{endpoint_id}/job-take/{worker_id}", job_take, methods=["GET"]),
    Route("/v2/{endpoint_id}/job-take-batch/{worker_id}", job_take_batch, methods=["GET"]),
    Route("/v2/{endpoint_id}/job-done/{worker_id}/{job_id}", job_done, methods=["POST"]),
    Route("/v2/{endpoint_id}/job-done-batch/{worker_id}", job_done_batch, methods=["POST"]),
    Route("/v2/{endpoint_id}/job-stream/{worker_id}/{job_id}", job_stream, methods=["POST"]),
    Route("/v2/{endpoint_id}/job-log/{worker_id}/{job_id}", job_log, methods=["POST"]),
    Route("/v2/{endpoint_id}/job-stop/{worker_id}", job_stop, methods=["GET"]),
    Route("/v2/{endpoint_id}/ping/{worker_id}", ping, methods=["GET"]),
]
