"""asyncio client: the twin of `sync.py`, driving the same `_core`.

Requests go straight through aiohttp (`AiohttpClient`); streamed replies (server-sent events),
and every request when a test hands in an httpx transport, go through an httpx.AsyncClient."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx

from neuroq.client import _core
from neuroq.client._core import ClientConfig, Request, Routes
from neuroq.errors import JobTimeout
from neuroq.http_client import AiohttpClient, AiohttpTransport, Reply, encode_json
from neuroq.jobs import Policy

StatusCallback = Callable[[dict[str, Any]], None]


class AsyncEndpoint:
    """The asyncio twin of `neuroq.Endpoint`; same arguments, awaitable methods."""

    def __init__(
        self,
        endpoint_id: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_s: float = _core.DEFAULT_WAIT_TIMEOUT_S,
        request_timeout_s: float = _core.DEFAULT_REQUEST_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = ClientConfig.resolve(endpoint_id, api_key, base_url, request_timeout_s)
        self.routes = Routes(self.config)
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(transport=transport or AiohttpTransport())
        self._fast = AiohttpClient() if transport is None else None

    @property
    def endpoint_id(self) -> str:
        return self.config.endpoint_id

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        await self._http.aclose()

    async def __aenter__(self) -> AsyncEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, request: Request, deadline: float | None = None) -> Any:
        """Perform one request, resending on transient failures as `_core.retry_delay` says."""
        return (await self._send(request, deadline))[0]

    async def _send(
        self, request: Request, deadline: float | None = None
    ) -> tuple[Any, Mapping[str, str]]:
        """`send`, also returning the reply's headers."""
        attempt = 0
        while True:
            try:
                response = await self._exchange(request)
            except httpx.TransportError as exc:
                outcome: Any = _core.failure_from_exception(exc, request)
            else:
                outcome = _core.read_reply(response.status_code, response.headers, response.content)
            if not isinstance(outcome, _core.Failure):
                return outcome, response.headers
            delay = _core.retry_delay(request, outcome, attempt, time.monotonic(), deadline)
            if delay is None:
                raise outcome.error
            await asyncio.sleep(delay)
            attempt += 1

    async def _exchange(self, request: Request) -> httpx.Response | Reply:
        timeout = _core.http_timeout(request)
        if self._fast is None:
            return await self._http.request(
                request.method,
                request.url,
                params=request.params,
                headers=request.headers,
                json=request.body,
                timeout=timeout,
            )
        headers = request.headers
        content = None
        if request.body is not None:
            content = encode_json(request.body)
            headers = {**headers, "Content-Type": "application/json"}
        return await self._fast.request(
            request.method,
            request.url,
            params=request.params,
            headers=headers,
            content=content,
            read_timeout_s=timeout.read,
            connect_timeout_s=timeout.connect,
        )

    async def run(
        self,
        input: Any,
        *,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> AsyncJob:
        request = self.routes.run(
            input, webhook=webhook, policy=policy, idempotency_key=idempotency_key
        )
        reply, headers = await self._send(request)
        return AsyncJob(self, _core.job_id_of(reply), reply, _core.submit_warning(headers))

    async def run_sync(
        self,
        input: Any,
        timeout_s: float | None = None,
        *,
        webhook: str | None = None,
        policy: Policy | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """See `neuroq.Endpoint.run_sync`."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        started = time.monotonic()
        request = self.routes.run(
            input,
            webhook=webhook,
            policy=policy,
            idempotency_key=idempotency_key,
            sync_wait_ms=_core.runsync_hold_ms(timeout_s),
        )
        reply, headers = await self._send(request)
        warning = _core.submit_warning(headers)
        if _core.is_terminal(reply):
            return dict(reply)
        job = AsyncJob(self, _core.job_id_of(reply), reply, warning)
        try:
            return await job.wait(max(0.0, timeout_s - (time.monotonic() - started)))
        except JobTimeout as exc:
            raise JobTimeout(job.id, timeout_s, exc.last_status) from None

    async def health(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self.send(self.routes.health())
        return reply

    async def purge_queue(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self.send(self.routes.purge_queue())
        return reply

    async def list_jobs(
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
        reply: dict[str, Any] = await self.send(request)
        return reply

    def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, job_id)


class AsyncJob(_core.JobHandleBase):
    """The asyncio twin of `neuroq.Job`."""

    __slots__ = ()
    endpoint: AsyncEndpoint

    async def status_object(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self.endpoint.send(self.endpoint.routes.status(self.id))
        self._last = reply
        return reply

    async def status(self) -> str:
        return str((await self.status_object()).get("status"))

    async def wait(
        self,
        timeout_s: float | None = None,
        *,
        on_status: StatusCallback | None = None,
        long_poll_ms: int = _core.LONG_POLL_MS,
    ) -> dict[str, Any]:
        timeout_s = self.endpoint.timeout_s if timeout_s is None else timeout_s
        known = _core.status_signature(self._last) if self._last else None
        plan = _core.WaitPlan(timeout_s, time.monotonic(), known, long_poll_ms=long_poll_ms)
        poll: _core.Poll | None = plan.first(time.monotonic(), look=on_status is not None)
        while poll is not None:
            await asyncio.sleep(poll.delay_s)
            sent_at = time.monotonic()
            request = self.endpoint.routes.status(self.id, poll.wait_ms)
            status = await self.endpoint.send(request, plan.deadline)
            self._last = status
            if on_status is not None:
                on_status(status)
            if _core.is_terminal(status):
                return dict(status)
            signature = _core.status_signature(status)
            poll = plan.next(signature, sent_at, time.monotonic(), poll.wait_ms)
        raise JobTimeout(self.id, timeout_s, self._last)

    async def output(self, timeout_s: float | None = None, *, timeout: float | None = None) -> Any:
        """See `neuroq.Job.output`."""
        return _core.output_or_raise(await self.wait(_core.wait_timeout(timeout_s, timeout)))

    async def stream(
        self, timeout_s: float | None = None, *, sse: bool = True
    ) -> AsyncIterator[Any]:
        """`async for chunk in job.stream()`: see `neuroq.Job.stream`."""
        plan = _core.WaitPlan(timeout_s, time.monotonic())
        state = _core.StreamState()
        if sse:
            try:
                async for chunk in self._stream_sse(state, plan):
                    yield chunk
            except _core.NoSSE as fallback:
                state.apply(fallback.update)
                for chunk in fallback.update.chunks:
                    yield chunk
            if state.done:
                return
        poll: _core.Poll | None = plan.first(time.monotonic())
        while poll is not None:
            await asyncio.sleep(poll.delay_s)
            sent_at = time.monotonic()
            reply = await self.endpoint.send(
                self.endpoint.routes.stream(self.id, poll.wait_ms), plan.deadline
            )
            update = _core.stream_reply_update(reply)
            state.apply(update)
            for chunk in update.chunks:
                yield chunk
            if state.done:
                return
            poll = plan.next(state.signature, sent_at, time.monotonic(), poll.wait_ms)
        raise JobTimeout(self.id, timeout_s or 0.0, self._last)

    async def _stream_sse(
        self, state: _core.StreamState, plan: _core.WaitPlan
    ) -> AsyncIterator[Any]:
        parser = _core.SSEParser()
        failures = 0
        while True:
            request = self.endpoint.routes.stream(self.id, sse=True, last_event_id=parser.last_id)
            timeout = _core.http_timeout(request, plan.remaining_s(time.monotonic()))
            try:
                async with self.endpoint._http.stream(
                    request.method, request.url, headers=request.headers, timeout=timeout
                ) as response:
                    if not _core.is_event_stream(response.headers):
                        await response.aread()
                        update = _core.sse_refused(
                            response.status_code, response.headers, response.content
                        )
                        raise _core.NoSSE(update)
                    parser.reset()
                    async for line in response.aiter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        update = _core.sse_update(event)
                        state.apply(update)
                        for chunk in update.chunks:
                            yield chunk
                        if update.end or state.done:
                            state.saw_terminal_empty = True
                            return
                failure = _core.STREAM_CLOSED_EARLY
            except httpx.TransportError as exc:
                failure = _core.failure_from_exception(exc, request)
            now = time.monotonic()
            delay = _core.sse_reconnect_delay(self.id, request, failure, failures, now, plan)
            await asyncio.sleep(delay)
            failures += 1

    async def cancel(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self.endpoint.send(self.endpoint.routes.cancel(self.id))
        self._last = reply
        return reply

    async def retry(self) -> dict[str, Any]:
        reply: dict[str, Any] = await self.endpoint.send(self.endpoint.routes.retry(self.id))
        self._last = reply
        return reply


async def async_send_and_wait(
    input_data: Any,
    timeout: float = _core.DEFAULT_WAIT_TIMEOUT_S,
    *,
    endpoint_id: str | None = None,
    api_key: str | None = None,
    base_url: str | None = None,
) -> dict[str, Any]:
    """The asyncio twin of `neuroq.send_and_wait`, with the same contract."""
    async with AsyncEndpoint(endpoint_id, api_key=api_key, base_url=base_url) as endpoint:
        try:
            return _core.guide_result(await endpoint.run_sync(input_data, timeout))
        except JobTimeout as exc:
            return {"error": str(exc)}
