"""Blocking client over httpx.Client. All protocol decisions come from `_core`; this module only
sends requests, sleeps the delays it is given and feeds replies back."""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from neuroq.client import _core
from neuroq.client._core import ClientConfig, Request, Routes
from neuroq.errors import JobTimeout
from neuroq.jobs import Policy

StatusCallback = Callable[[dict[str, Any]], None]


class Endpoint:
    """One endpoint of a NeuroQ (or RunPod) server.

    `timeout_s` is the default for waits (`run_sync`, `Job.output`); `request_timeout_s` bounds
    one HTTP exchange beyond any long-poll hold. `transport` replaces the network (tests)."""

    def __init__(
        self,
        endpoint_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = _core.DEFAULT_WAIT_TIMEOUT_S,
        request_timeout_s: float = _core.DEFAULT_REQUEST_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(endpoint_id, api_key, base_url, request_timeout_s)
        self.routes = Routes(self.config)
        self.timeout_s = timeout_s
        self._http = httpx.Client(transport=transport)

    @property
    def endpoint_id(self) -> str:
        return self.config.endpoint_id

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, request: Request, deadline: float | None = None) -> Any:
        """Perform one request, resending on transient failures as `_core.retry_delay` says."""
        return self._send(request, deadline)[0]

    def _send(
        self, request: Request, deadline: float | None = None
    ) -> tuple[Any, Mapping[str, str]]:
        """`send`, also returning the reply's headers."""
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    request.method,
                    request.url,
                    params=request.params,
                    headers=request.headers,
                    json=request.body,
                    timeout=_core.http_timeout(request),
                )
            except httpx.TransportError as exc:
                outcome: Any = _core.failure_from_exception(exc, request)
            else:
                outcome = _core.read_reply(response.status_code, response.headers, response.content)
            if not isinstance(outcome, _core.Failure):
                return outcome, response.headers
            delay = _core.retry_delay(request, outcome, attempt, time.monotonic(), deadline)
            if delay is None:
                raise outcome.error
            time.sleep(delay)
            attempt += 1

    def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job and return its handle at once."""
        request = self.routes.run(
            input, webhook=webhook, policy=policy, idempotency_key=idempotency_key
        )
        reply, headers = self._send(request)
        return Job(self, _core.job_id_of(reply), reply, _core.submit_warning(headers))

    def run_sync(
        self,
        input: Any,
        timeout_s: float | None = None,
        *,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit through `/runsync` and return the terminal status object (FAILED included);
        long-polls on when the server replies before the job ends. JobTimeout after
        `timeout_s`. A deadline under a second submits through `/run`, since the server holds
        a `/runsync` at least a second."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        request = self.routes.run(
            input,
            webhook=webhook,
            policy=policy,
            idempotency_key=idempotency_key,
            sync_wait_ms=_core.runsync_hold_ms(timeout_s),
        )
        reply, headers = self._send(request)
        warning = _core.submit_warning(headers)
        if _core.is_terminal(reply):
            return dict(reply)
        job = Job(self, _core.job_id_of(reply), reply, warning)
        try:
            return job.wait(max(0.0, timeout_s - (time.monotonic() - started)))
        except JobTimeout as exc:
            raise JobTimeout(job.id, timeout_s, exc.last_status) from None

    def health(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.send(self.routes.health())
        return reply

    def purge_queue(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.send(self.routes.purge_queue())
        return reply

    def list_jobs(
        self,
        status: str | None = None,
        *,
        limit: int = 50,
        offset: int = 0,
        every_endpoint: bool = False,
    ) -> dict[str, Any]:
        """One page of retained jobs, newest first, without inputs or outputs:
        {"jobs": [...], "nextOffset": n or None, ...} (our server only; docs/api.md)."""
        request = self.routes.list_jobs(
            status=status, limit=limit, offset=offset, every_endpoint=every_endpoint
        )
        reply: dict[str, Any] = self.send(request)
        return reply

    def job(self, job_id: str) -> Job:
        """A handle for a job submitted earlier (by id)."""
        return Job(self, job_id)


class Job(_core.JobHandleBase):
    """A submitted job. Every method asks the server; the handle itself holds only the id."""

    __slots__ = ()
    endpoint: Endpoint

    def status_object(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.endpoint.send(self.endpoint.routes.status(self.id))
        self._last = reply
        return reply

    def status(self) -> str:
        return str(self.status_object().get("status"))

    def wait(
        self,
        timeout_s: float | None = None,
        *,
        on_status: StatusCallback | None = None,
        long_poll_ms: int = _core.LONG_POLL_MS,
    ) -> dict[str, Any]:
        """The terminal status object, whatever the state; JobTimeout when time runs out.
        `on_status` sees every status object received (for progress displays)."""
        timeout_s = self.endpoint.timeout_s if timeout_s is None else timeout_s
        known = _core.status_signature(self._last) if self._last else None
        plan = _core.WaitPlan(timeout_s, time.monotonic(), known, long_poll_ms=long_poll_ms)
        poll: _core.Poll | None = plan.first(time.monotonic(), look=on_status is not None)
        while poll is not None:
            time.sleep(poll.delay_s)
            sent_at = time.monotonic()
            request = self.endpoint.routes.status(self.id, poll.wait_ms)
            status = self.endpoint.send(request, plan.deadline)
            self._last = status
            if on_status is not None:
                on_status(status)
            if _core.is_terminal(status):
                return dict(status)
            signature = _core.status_signature(status)
            poll = plan.next(signature, sent_at, time.monotonic(), poll.wait_ms)
        raise JobTimeout(self.id, timeout_s, self._last)

    def output(self, timeout_s: float | None = None, *, timeout: float | None = None) -> Any:
        """The job's output once COMPLETED; JobFailed for FAILED/CANCELLED/TIMED_OUT.
        `timeout` is the runpod SDK's name for `timeout_s`."""
        return _core.output_or_raise(self.wait(_core.wait_timeout(timeout_s, timeout)))

    def stream(self, timeout_s: float | None = None, *, sse: bool = True) -> Iterator[Any]:
        """Yield the job's stream chunks as they arrive, each once, until the job ends.

        Uses Server-Sent Events where the server offers them and falls back to polling the
        consuming JSON `/stream` route (hosted RunPod). `timeout_s=None` waits as long as it
        takes. Ends normally for every terminal state; check `status()` afterwards."""
        plan = _core.WaitPlan(timeout_s, time.monotonic())
        state = _core.StreamState()
        if sse:
            try:
                yield from self._stream_sse(state, plan)
            except _core.NoSSE as fallback:
                state.apply(fallback.update)
                yield from fallback.update.chunks
            if state.done:
                return
        poll: _core.Poll | None = plan.first(time.monotonic())
        while poll is not None:
            time.sleep(poll.delay_s)
            sent_at = time.monotonic()
            reply = self.endpoint.send(
                self.endpoint.routes.stream(self.id, poll.wait_ms), plan.deadline
            )
            update = _core.stream_reply_update(reply)
            state.apply(update)
            yield from update.chunks
            if state.done:
                return
            poll = plan.next(state.signature, sent_at, time.monotonic(), poll.wait_ms)
        raise JobTimeout(self.id, timeout_s or 0.0, self._last)

    def _stream_sse(self, state: _core.StreamState, plan: _core.WaitPlan) -> Iterator[Any]:
        parser = _core.SSEParser()
        failures = 0
        while True:
            request = self.endpoint.routes.stream(self.id, sse=True, last_event_id=parser.last_id)
            timeout = _core.http_timeout(request, plan.remaining_s(time.monotonic()))
            try:
                with self.endpoint._http.stream(
                    request.method, request.url, headers=request.headers, timeout=timeout
                ) as response:
                    if not _core.is_event_stream(response.headers):
                        response.read()
                        update = _core.sse_refused(
                            response.status_code, response.headers, response.content
                        )
                        raise _core.NoSSE(update)
                    parser.reset()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        update = _core.sse_update(event)
                        state.apply(update)
                        yield from update.chunks
                        if update.end or state.done:
                            state.saw_terminal_empty = True
                            return
                failure = _core.STREAM_CLOSED_EARLY
            except httpx.TransportError as exc:
                failure = _core.failure_from_exception(exc, request)
            now = time.monotonic()
            delay = _core.sse_reconnect_delay(self.id, request, failure, failures, now, plan)
            time.sleep(delay)
            failures += 1

    def cancel(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.endpoint.send(self.endpoint.routes.cancel(self.id))
        self._last = reply
        return reply

    def retry(self) -> dict[str, Any]:
        reply: dict[str, Any] = self.endpoint.send(self.endpoint.routes.retry(self.id))
        self._last = reply
        return reply


# send_and_wait keeps one Endpoint per configuration and process, so a loop of calls reuses its
# keep-alive connection instead of paying a TCP (and, against hosted RunPod, a TLS) handshake per
# call. httpx.Client is safe to share between threads; the pid keeps a forked child off its
# parent's sockets.
_SHARED: dict[tuple[int, ClientConfig], Endpoint] = {}
_SHARED_LOCK = threading.Lock()
_SHARED_MAX = 16


def _shared_endpoint(
    endpoint_id: str | None, api_key: str | None, base_url: str | None
) -> Endpoint:
    config = ClientConfig.resolve(endpoint_id, api_key, base_url)
    key = (os.getpid(), config)
    with _SHARED_LOCK:
        endpoint = _SHARED.get(key)
        if endpoint is None:
            if len(_SHARED) >= _SHARED_MAX:
                _close_shared()
            endpoint = Endpoint(
                config.endpoint_id, api_key=config.api_key, base_url=config.base_url
            )
            _SHARED[key] = endpoint
        return endpoint


@atexit.register
def _close_shared() -> None:
    for (pid, _), endpoint in list(_SHARED.items()):
        if pid == os.getpid():
            endpoint.close()
    _SHARED.clear()


def send_and_wait(
    input_data: Any,
    timeout: float = _core.DEFAULT_WAIT_TIMEOUT_S,
    *,
    endpoint_id: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> dict[str, Any]:
    """Submit `input_data` and wait up to `timeout` seconds, as in the users' guide.

    Returns {"output": ...} when the job COMPLETED and {"error": "..."} when it FAILED, was
    CANCELLED, TIMED_OUT, or did not finish in time. A job's failure never raises; bad settings
    and an unreachable or refusing server do (ClientError subclasses).

    It submits through `/runsync` (as `Endpoint.run_sync`), so a job that ends while the server
    holds the request costs one round trip; a longer one is then long-polled. Calls with the
    same settings share one keep-alive connection pool."""
    endpoint = _shared_endpoint(endpoint_id, api_key, base_url)
    try:
        return _core.guide_result(endpoint.run_sync(input_data, timeout))
    except JobTimeout as exc:
        return {"error": str(exc)}
