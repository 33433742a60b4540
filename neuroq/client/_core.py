"""The client protocol, written once and without I/O.

Everything the sync and asyncio clients share lives here as plain data and pure functions:
configuration, a `Request` description for every route, reading replies into values or errors,
the retry decision for transient failures (on the policy in `neuroq.http_retry`, which the
worker follows too), the wait schedule (`WaitPlan`) and the SSE line parser. `sync.py` and
`aio.py` only send the requests, sleep the delays they are told and feed the replies back, so
the two can never drift apart and this module is tested without a network.

The wait schedule in short: status polls carry `?wait=<ms>`, which our server holds until the
job ends or its progress output changes, but not when it merely starts or is requeued, so a short
job takes one poll (hosted RunPod ignores `wait` and answers at once). A reply that comes back
much sooner than asked while nothing changed shows the server does not hold, and the plan falls
back to capped exponential backoff; a hold that ends early because the job ended is simply the
answer. No delay and no hold ever runs past the caller's
deadline, so a timeout is honoured to within one poll.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from neuroq.client import connection
from neuroq.errors import (
    APIError,
    AuthenticationError,
    ClientError,
    ConfigurationError,
    JobFailed,
    JobTimeout,
    NotFoundError,
    RequestRejected,
    TransportError,
)
from neuroq.http_retry import Backoff, is_retryable_status, retry_after_s
from neuroq.jobs import TERMINAL, Policy

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v2"
#: how long one HTTP exchange may take, on top of any long-poll hold it asked for
DEFAULT_REQUEST_TIMEOUT_S = 30.0
#: default for `output()`, `run_sync()` and `send_and_wait()`, as in the users' guide
DEFAULT_WAIT_TIMEOUT_S = 600.0
#: longest hold asked of the server per status poll; well under its 90 s cap
LONG_POLL_MS = 30_000
#: runsync's own wait bounds on hosted RunPod
RUNSYNC_MIN_WAIT_MS = 1_000
RUNSYNC_MAX_WAIT_MS = 90_000
#: our server sends an SSE keep-alive every 15 s; silence this long means a dead connection
SSE_READ_TIMEOUT_S = 60.0
#: polls without long-poll, and resends after a transient failure, back off alike
MIN_BACKOFF_S = 0.1
MAX_BACKOFF_S = 2.0
RESEND_BACKOFF = Backoff(MIN_BACKOFF_S, MAX_BACKOFF_S)
#: attempts per request when failures are transient (connection errors, 408, 429, 5xx)
MAX_ATTEMPTS = 5
#: a submit's reply carries this when the server has a word for the caller (neuroq.api.served)
WARNING_HEADER = "X-NeuroQ-Warning"

log = logging.getLogger("neuroq.client")


@dataclass(frozen=True)
class ClientConfig:
    """Where and as whom to talk. Arguments win over the environment, which wins over defaults
    (`neuroq.client.connection` holds the order)."""

    endpoint_id: str
    api_key: str | None
    base_url: str
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S

    @classmethod
    def resolve(
        cls,
        endpoint_id: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
    ) -> ClientConfig:
        """Each value by the order in `neuroq.client.connection`, shared with the CLI."""
        env = os.environ if env is None else env
        endpoint_id = connection.endpoint_id(endpoint_id, env)
        if "/" in endpoint_id or endpoint_id.strip() != endpoint_id:
            raise ConfigurationError(f"endpoint id {endpoint_id!r} must be one URL path segment")
        url = connection.server_url(base_url, env)
        api_key = connection.client_key(api_key, url, env)
        base_url = normalize_base_url(url)
        if not request_timeout_s > 0:
            raise ConfigurationError(f"request_timeout_s must be > 0, got {request_timeout_s}")
        return cls(endpoint_id, api_key, base_url, request_timeout_s)


def normalize_base_url(url: str) -> str:
    """Accept `http://host:port` as well as `http://host:port/v2`; reject anything not http(s).

    A bare origin gets `/v2` because every RunPod route lives under it, and a server URL without
    it is the commonest slip (the worker's `--url` takes the bare origin)."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"base URL {url!r} must look like http://host:port/v2 or https://api.runpod.ai/v2"
        )
    if parts.path in ("", "/"):
        url += "/v2"
    return url


@dataclass(frozen=True)
class Request:
    """One HTTP exchange to perform, as data."""

    method: str
    url: str
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    #: JSON body; None sends no body at all (cancel, retry, purge-queue)
    body: Any = None
    timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    #: True when sending it twice does no harm (reads; writes carrying an Idempotency-Key).
    #: Other requests are resent only when the server certainly did not act on them.
    resend_safe: bool = True
    #: ask for Server-Sent Events and read the body incrementally
    sse: bool = False


class Routes:
    """Builds the `Request` for every client route of one endpoint (docs/api.md, Routes)."""

    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        self._prefix = f"{config.base_url}/{quote(config.endpoint_id, safe='')}"

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        if extra:
            headers.update(extra)
        return headers

    def _url(self, op: str, job_id: str | None = None) -> str:
        if job_id is None:
            return f"{self._prefix}/{op}"
        if not job_id or "/" in job_id:
            raise ClientError(f"job id {job_id!r} is not a valid id")
        return f"{self._prefix}/{op}/{quote(job_id, safe='')}"

    def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        sync_wait_ms: int | None = None,
    ) -> Request:
        """`/run`, or `/runsync` when `sync_wait_ms` is given. Every submission carries an
        Idempotency-Key (a fresh one unless the caller chose it), so a retry after a lost reply
        cannot create a second job on our server."""
        body = submit_body(input, webhook=webhook, policy=policy)
        key = idempotency_key or uuid.uuid4().hex
        headers = self._headers({"Idempotency-Key": key})
        timeout_s = self.config.request_timeout_s
        if sync_wait_ms is None:
            return Request(
                "POST", self._url("run"), headers=headers, body=body, timeout_s=timeout_s
            )
        wait_ms = max(RUNSYNC_MIN_WAIT_MS, min(RUNSYNC_MAX_WAIT_MS, sync_wait_ms))
        return Request(
            "POST",
            self._url("runsync"),
            params={"wait": str(wait_ms)},
            headers=headers,
            body=body,
            timeout_s=timeout_s + wait_ms / 1000,
        )

    def status(self, job_id: str, wait_ms: int | None = None) -> Request:
        params = {"wait": str(wait_ms)} if wait_ms else {}
        hold_s = (wait_ms or 0) / 1000
        return Request(
            "GET",
            self._url("status", job_id),
            params=params,
            headers=self._headers(),
            timeout_s=self.config.request_timeout_s + hold_s,
        )

    def stream(
        self,
        job_id: str,
        wait_ms: int | None = None,
        *,
        sse: bool = False,
        last_event_id: str | None = None,
    ) -> Request:
        """The consuming JSON `/stream` poll, or (sse=True) our Server-Sent Events extension,
        which never consumes and resumes after `last_event_id` on a reconnect."""
        if sse:
            extra = {"Accept": "text/event-stream"}
            if last_event_id is not None:
                extra["Last-Event-ID"] = last_event_id
            return Request(
                "GET",
                self._url("stream", job_id),
                headers=self._headers(extra),
                timeout_s=SSE_READ_TIMEOUT_S,
                sse=True,
            )
        params = {"wait": str(wait_ms)} if wait_ms else {}
        return Request(
            "GET",
            self._url("stream", job_id),
            params=params,
            headers=self._headers(),
            timeout_s=self.config.request_timeout_s + (wait_ms or 0) / 1000,
        )

    def cancel(self, job_id: str) -> Request:
        # Cancelling twice leaves the job as cancelling once does: safe to resend.
        return self._post("cancel", job_id, resend_safe=True)

    def retry(self, job_id: str) -> Request:
        # A second /retry of a job the first one already requeued would be refused (400).
        return self._post("retry", job_id, resend_safe=False)

    def purge_queue(self) -> Request:
        # A resend could remove jobs queued in between, which the caller never asked for.
        return self._post("purge-queue", None, resend_safe=False)

    def health(self) -> Request:
        return Request(
            "GET",
            self._url("health"),
            headers=self._headers(),
            timeout_s=self.config.request_timeout_s,
        )

    def list_jobs(
        self,
        *,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        every_endpoint: bool = False,
    ) -> Request:
        """`GET /v2/jobs` (our extension): this endpoint's retained jobs, or every endpoint's."""
        params = {"limit": str(limit), "offset": str(offset)}
        if not every_endpoint:
            params["endpoint"] = self.config.endpoint_id
        if status is not None:
            params["status"] = status
        return Request(
            "GET",
            f"{self.config.base_url}/jobs",
            params=params,
            headers=self._headers(),
            timeout_s=self.config.request_timeout_s,
        )

    def logs(self, job_id: str, *, after: int = 0, limit: int = 500) -> Request:
        """`GET /v2/{ep}/logs/{id}` (our extension): the job's log lines after seq `after`."""
        return Request(
            "GET",
            self._url("logs", job_id),
            params={"after": str(after), "limit": str(limit)},
            headers=self._headers(),
            timeout_s=self.config.request_timeout_s,
        )

    def _post(self, op: str, job_id: str | None, *, resend_safe: bool) -> Request:
        return Request(
            "POST",
            self._url(op, job_id),
            headers=self._headers(),
            timeout_s=self.config.request_timeout_s,
            resend_safe=resend_safe,
        )


def runsync_hold_ms(timeout_s: float) -> int | None:
    """How long `run_sync` asks `/runsync` to hold, or None to submit through `/run`: the
    server holds at least RUNSYNC_MIN_WAIT_MS, longer than a shorter deadline allows."""
    hold_ms = int(timeout_s * 1000)
    return hold_ms if hold_ms >= RUNSYNC_MIN_WAIT_MS else None


def submit_body(
    input: Any,
    *,
    webhook: str | None = None,
    policy: Policy | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The `/run` body. `input` is always wrapped, never guessed at (unlike runpod's
    `Endpoint.run`, which wraps only when `input` lacks a truthy "input" key)."""
    try:
        json.dumps(input)
    except (TypeError, ValueError) as exc:
        raise ClientError(f"input is not JSON-serialisable: {exc}") from None
    body: dict[str, Any] = {"input": input}
    if webhook is not None:
        if not isinstance(webhook, str) or not webhook.startswith(("http://", "https://")):
            raise ClientError(f"webhook must be an http(s) URL, got {webhook!r}")
        body["webhook"] = webhook
    if policy is not None:
        body["policy"] = policy.to_wire() if isinstance(policy, Policy) else dict(policy)
    return body


def http_timeout(request: Request, remaining_s: float = math.inf) -> httpx.Timeout:
    """httpx timeouts for `request`; a read with no limit of its own (SSE) waits at most until
    the caller's deadline."""
    read = min(request.timeout_s, max(remaining_s, 0.001))
    read_s = None if math.isinf(read) else read
    return httpx.Timeout(read_s, connect=min(10.0, read_s or 10.0))


# Replies


@dataclass(frozen=True)
class Failure:
    """A failed exchange: the error to raise if retrying does not help, and what retrying needs."""

    error: ClientError
    transient: bool
    #: False only when the server certainly did not act on the request (refused connection, 429)
    maybe_delivered: bool = True
    retry_after_s: float | None = None


def read_reply(status_code: int, headers: Mapping[str, str], content: bytes) -> Any:
    """The JSON value of a 200 reply. Any other reply is returned as a `Failure` (not raised),
    so the caller can decide to retry; see `failure_from_reply`."""
    body = _decode(content)
    if status_code == 200:
        if isinstance(body, _Undecodable):
            return Failure(
                APIError(status_code, body.text, "HTTP 200 with a body that is not JSON"),
                transient=False,
            )
        return body
    return failure_from_reply(status_code, headers, body)


@dataclass(frozen=True)
class _Undecodable:
    """A reply body that is not JSON (a proxy's HTML error page, say), kept for the message."""

    text: str


def _decode(content: bytes) -> Any:
    try:
        return json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return _Undecodable(content[:500].decode("utf-8", errors="replace"))


def failure_from_reply(status_code: int, headers: Mapping[str, str], body: Any) -> Failure:
    raw = body.text if isinstance(body, _Undecodable) else body
    if status_code == 401:
        return Failure(AuthenticationError(status_code, raw), transient=False)
    if status_code == 404:
        return Failure(NotFoundError(status_code, raw), transient=False)
    if status_code in (400, 413):
        return Failure(RequestRejected(status_code, raw), transient=False)
    if is_retryable_status(status_code):
        # 429 and 503 are refusals before any work; other 5xx may have half-happened.
        delivered = status_code not in (429, 503)
        return Failure(APIError(status_code, raw), True, delivered, retry_after_s(headers))
    return Failure(APIError(status_code, raw), transient=False)


def failure_from_exception(exc: Exception, request: Request) -> Failure:
    """Map an httpx transport exception to a `Failure`; refused or never-opened connections
    are the only ones known not to have reached the server."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error = TransportError(f"{request.method} {request.url} failed: {detail}")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Failure(error, transient=True, maybe_delivered=False)
    if isinstance(exc, httpx.TransportError):
        return Failure(error, transient=True, maybe_delivered=True)
    raise exc


def retry_delay(
    request: Request,
    failure: Failure,
    attempt: int,
    now: float,
    deadline: float | None = None,
) -> float | None:
    """Seconds to wait before resending `request` after its `attempt`-th failure (0-based), or
    None to give up and raise `failure.error`. Never schedules a resend past `deadline`."""
    if not failure.transient or attempt + 1 >= MAX_ATTEMPTS:
        return None
    if failure.maybe_delivered and not request.resend_safe:
        return None
    delay = RESEND_BACKOFF.delay_s(attempt, failure.retry_after_s)
    if deadline is not None and now + delay >= deadline:
        return None
    return delay


# Job outcomes


def is_terminal(status: Mapping[str, Any]) -> bool:
    # The wire string finds its JobStatus member in TERMINAL: they are equal as strings.
    return status.get("status") in TERMINAL


def job_id_of(reply: Any) -> str:
    """The id from a run/runsync reply; a reply without one is a protocol error, said plainly."""
    job_id = reply.get("id") if isinstance(reply, dict) else None
    if not isinstance(job_id, str) or not job_id:
        raise APIError(200, reply, f"the server's reply has no job id: {reply!r}")
    return job_id


def error_text(status: Mapping[str, Any]) -> str:
    """The job's error as one string. Workers may report structured errors (the runpod SDK
    sends JSON with error_type/error_message), which are kept as compact JSON."""
    state = status.get("status", "UNKNOWN")
    error = status.get("error")
    if error is None or error == "":
        return {
            "CANCELLED": "job was cancelled",
            "TIMED_OUT": "job timed out on the server",
        }.get(state, f"job ended {state}")
    if isinstance(error, str):
        return error
    return json.dumps(error, ensure_ascii=False)


def output_or_raise(status: Mapping[str, Any]) -> Any:
    """The output of a terminal status object; JobFailed for any other terminal state."""
    if status.get("status") == "COMPLETED":
        return status.get("output")
    raise JobFailed(str(status.get("id", "?")), str(status.get("status")), error_text(status))


def submit_warning(headers: Mapping[str, str]) -> str | None:
    """The server's warning about a submit (no worker has ever served its endpoint, say), logged
    on the `neuroq.client` logger: a misspelt endpoint would otherwise wait in silence."""
    warning = headers.get(WARNING_HEADER)
    if warning:
        log.warning("%s", warning)
    return warning or None


def wait_timeout(timeout_s: float | None, timeout: float | None) -> float | None:
    """`timeout` is the runpod SDK's name for `timeout_s` (`job.output(timeout=60)`); accepting
    both lets SDK code run unchanged."""
    if timeout is None:
        return timeout_s
    if timeout_s is not None and timeout_s != timeout:
        raise ClientError(f"pass timeout or timeout_s, not both (got {timeout} and {timeout_s})")
    return timeout


def guide_result(status: Mapping[str, Any]) -> dict[str, Any]:
    """The users' guide contract: {"output": ...} on COMPLETED, else {"error": "..."}."""
    if status.get("status") == "COMPLETED":
        return {"output": status.get("output", {})}
    return {"error": error_text(status)}


def status_signature(status: Mapping[str, Any]) -> tuple[Any, ...]:
    """What counts as a change while waiting: the state and the progress output."""
    output = status.get("output")
    try:
        encoded = json.dumps(output, sort_keys=True)
    except (TypeError, ValueError):
        encoded = repr(output)
    return (status.get("status"), encoded)


# The wait schedule


@dataclass(frozen=True)
class Poll:
    """The next poll: sleep `delay_s`, then send with `?wait=wait_ms` (None: no hold)."""

    delay_s: float
    wait_ms: int | None


@dataclass
class WaitPlan:
    """Decides when to poll next while waiting for a job, given only times and signatures.

    `long_poll` is None until a reply tells: True when the server held a poll, False when it
    answered a `?wait=` poll in under half the time asked while nothing changed."""

    timeout_s: float | None
    started_at: float
    last_signature: Any = None
    long_poll_ms: int = LONG_POLL_MS
    min_backoff_s: float = MIN_BACKOFF_S
    max_backoff_s: float = MAX_BACKOFF_S
    long_poll: bool | None = None
    backoff_s: float = field(init=False)

    def __post_init__(self) -> None:
        if self.timeout_s is not None and not self.timeout_s >= 0:
            raise ClientError(f"timeout must be >= 0 seconds, got {self.timeout_s}")
        self.backoff_s = self.min_backoff_s

    @property
    def deadline(self) -> float | None:
        return None if self.timeout_s is None else self.started_at + self.timeout_s

    def remaining_s(self, now: float) -> float:
        return math.inf if self.deadline is None else self.deadline - now

    def first(self, now: float, *, look: bool = False) -> Poll:
        """The first poll goes out at once, even with no time left: one look is always taken.

        `look=True` also asks for no hold, for callers that show every state they can (progress
        displays): the server holds a poll until the job ends or its progress output differs
        from what it was when the poll arrived, so a held first poll would sit on a change made
        since the caller last looked (a progress step shown one step late, or a start shown
        only at the end of the hold)."""
        return Poll(0.0, None if look else self._hold_ms(self.remaining_s(now)))

    def next(
        self, signature: Any, sent_at: float, received_at: float, wait_ms: int | None
    ) -> Poll | None:
        """The poll after a non-terminal reply, or None when the deadline has passed."""
        changed = signature != self.last_signature
        self.last_signature = signature
        elapsed = received_at - sent_at
        held = False
        if wait_ms is not None and wait_ms >= 1000 and not changed:
            if elapsed < wait_ms / 2000:
                self.long_poll = False
            else:
                self.long_poll = held = True

        if changed:
            self.backoff_s = self.min_backoff_s
            delay = 0.0 if self.long_poll is not False else self.min_backoff_s
        elif held:
            delay = 0.0
        else:
            delay = self.backoff_s
            self.backoff_s = min(self.backoff_s * 2, self.max_backoff_s)

        remaining = self.remaining_s(received_at)
        if remaining <= 0:
            return None
        delay = min(delay, remaining)
        hold_ms = self._hold_ms(remaining - delay) if self.long_poll is not False else None
        return Poll(delay, hold_ms)

    def _hold_ms(self, remaining_s: float) -> int | None:
        hold = min(float(self.long_poll_ms), remaining_s * 1000)
        return int(hold) if hold >= 1 else None


# Server-Sent Events


@dataclass(frozen=True)
class SSEEvent:
    event: str
    data: str
    id: str | None = None


class SSEParser:
    """Turns the lines of a text/event-stream body into events (WHATWG rules, minus `retry`)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self.last_id: str | None = None

    def reset(self) -> None:
        """Forget a half-received event (the connection broke); `last_id` is kept for resuming."""
        self._event, self._data, self._id = "", [], self.last_id

    def feed(self, line: str) -> SSEEvent | None:
        line = line.rstrip("\r\n")
        if line == "":
            if not self._data and not self._event:
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = self.last_id = value
        return None


@dataclass(frozen=True)
class StreamUpdate:
    """What one SSE event or JSON `/stream` reply means to a reader of the stream."""

    chunks: list[Any] = field(default_factory=list)
    #: the job's state when the server said it, else None
    status: str | None = None
    #: the server says no more events will follow on this connection
    end: bool = False


def stream_reply_update(reply: Any) -> StreamUpdate:
    """Read a JSON `/stream` reply: `{"status": ..., "stream": [{"output": chunk}, ...]}`."""
    if not isinstance(reply, dict) or not isinstance(reply.get("stream", []), list):
        raise APIError(200, reply, f"unexpected /stream reply: {reply!r}")
    chunks = [_chunk_value(item) for item in reply.get("stream", [])]
    status = reply.get("status")
    return StreamUpdate(chunks, status if isinstance(status, str) else None)


class NoSSE(Exception):
    """Raised by a driver when the server answered the SSE request without an event stream;
    `update` holds what that reply carried, so no chunk is lost on the way to polling."""

    def __init__(self, update: StreamUpdate) -> None:
        super().__init__("the server does not offer Server-Sent Events here")
        self.update = update


def is_event_stream(headers: Mapping[str, str]) -> bool:
    return headers.get("content-type", "").startswith("text/event-stream")


def sse_refused(status_code: int, headers: Mapping[str, str], content: bytes) -> StreamUpdate:
    """Read the reply to an SSE request that did not come back as an event stream.

    A server without SSE answers with an ordinary consuming JSON poll, whose chunks must be
    kept; 405/406 mean "not here, poll instead"; any other error is raised."""
    reply = read_reply(status_code, headers, content)
    if isinstance(reply, Failure):
        if status_code in (405, 406):
            return StreamUpdate()
        raise reply.error
    return stream_reply_update(reply)


def sse_update(event: SSEEvent) -> StreamUpdate:
    """Read one SSE event of our `/stream` extension. Chunk events (unnamed, `id: <seq>`) carry
    the stored stream item (`{"output": chunk}`); a `status` event carries the status object and,
    once terminal, is the last event; `error` means the job is gone."""
    try:
        payload: Any = json.loads(event.data) if event.data else None
    except ValueError:
        payload = event.data
    name = event.event
    if name in ("end", "done", "close"):
        status = payload.get("status") if isinstance(payload, dict) else None
        return StreamUpdate(status=status if isinstance(status, str) else None, end=True)
    if name in ("status", "progress", "state"):
        status = payload.get("status") if isinstance(payload, dict) else None
        return StreamUpdate(status=status if isinstance(status, str) else None)
    if name == "error":
        detail = payload.get("error") if isinstance(payload, dict) else payload
        raise NotFoundError(404, payload, f"the event stream ended with an error: {detail}")
    if isinstance(payload, dict) and isinstance(payload.get("stream"), list):
        return stream_reply_update(payload)
    return StreamUpdate([_chunk_value(payload)])


def sse_reconnect_delay(
    job_id: str, request: Request, failure: Failure, failures: int, now: float, plan: WaitPlan
) -> float:
    """Seconds before reopening an event stream that broke before the job ended (it resumes
    after the last event id, so nothing repeats). Raises JobTimeout past the deadline, or the
    failure once `failures` consecutive attempts are spent."""
    if plan.remaining_s(now) <= 0:
        raise JobTimeout(job_id, plan.timeout_s or 0.0, None)
    delay = retry_delay(request, failure, failures, now, plan.deadline)
    if delay is None:
        raise failure.error
    return delay


STREAM_CLOSED_EARLY = Failure(
    TransportError("the event stream closed before the job ended"), transient=True
)


def _chunk_value(item: Any) -> Any:
    return item["output"] if isinstance(item, dict) and "output" in item else item


@dataclass
class StreamState:
    """Tracks a stream being read: chunks counted, last state seen. Drives the end decision and
    gives `WaitPlan` a signature that changes whenever something new arrived."""

    received: int = 0
    status: str | None = None
    #: one empty reply after a terminal state is needed before the stream is known complete
    saw_terminal_empty: bool = False

    def apply(self, update: StreamUpdate) -> None:
        self.received += len(update.chunks)
        if update.status is not None:
            self.status = update.status
        if self.status in TERMINAL and not update.chunks:
            self.saw_terminal_empty = True

    @property
    def signature(self) -> tuple[Any, ...]:
        return (self.status, self.received)

    @property
    def done(self) -> bool:
        return self.saw_terminal_empty


class JobHandleBase:
    """What `Job` and `AsyncJob` share: the id, the endpoint and the last status object seen.
    The handles differ only in whether their methods await."""

    __slots__ = ("_last", "endpoint", "id", "warning")

    def __init__(
        self,
        endpoint: Any,
        job_id: str,
        last: dict[str, Any] | None = None,
        warning: str | None = None,
    ):
        self.endpoint = endpoint
        self.id = job_id
        self._last = last
        #: what the server said about the submit (`X-NeuroQ-Warning`), if anything
        self.warning = warning

    @property
    def last_status(self) -> dict[str, Any] | None:
        """The status object last received for this job (no request made)."""
        return self._last

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.id!r})"
