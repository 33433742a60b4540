"""The worker's HTTP calls to the server's worker routes (docs/worker-protocol.md), over one
keep-alive client.

URL forms are those a RunPod 1.12 worker requests, so the server has one code path for both:

    GET  {base}/job-take/{wid}?job_in_progress=0|1
    GET  {base}/job-take-batch/{wid}?batch_size=N&job_in_progress=0|1
    POST {base}/job-done/{wid}/{job_id}?isStream=true|false      body: JSON text
    POST {base}/job-done-batch/{wid}     body: [{"id": job_id, "result": JSON text}, ...]
    POST {base}/job-stream/{wid}/{job_id}?isStream=false         body: {"output": chunk}
    POST {base}/job-log/{wid}/{job_id}       body: {"lines": [...], "truncated"?: true}
    GET  {base}/job-stop/{wid}                                   -> {"jobsToStop": [...]} | 204
    GET  {base}/ping/{wid}?job_id=a,b
    GET  {base}/ping/{wid}?status=leaving                        goodbye, from aclose()

where base is `http://HOST:PORT/v2/{endpoint}`. Unlike the SDK, every call retries connection
errors, 408, 429 and 5xx with a capped backoff (honouring Retry-After), so no loop here ever
spins. Which failures are retried and how long to wait is the policy the client follows too
(`neuroq.http_retry`); how long to keep trying, and that a refused key stops the worker, is
decided here.

job-log (the handler's captured log lines, see job_log.py) is our extension too: a server without
it (a plain 404 or 405, not our JSON error) gets no more log posts from this worker.

job-done-batch is our server's extension: final results that finish while an earlier one is
still being posted wait for that post and then go together in one request (`finish`). A lone
result goes out at once through plain job-done, so batching adds no latency; a server without
the extension (404/405) gets plain job-done posts from then on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx

from neuroq.http_client import AiohttpClient, Reply
from neuroq.http_retry import Backoff, is_retryable_status, retry_after_s

log = logging.getLogger("neuroq.worker")

USER_AGENT = "neuroq-worker/0.1"
#: most results in one job-done-batch post (the server's cap too)
MAX_BATCH = 100
#: results larger than this, or batches that would grow beyond it, are posted on their own
MAX_BATCH_BYTES = 1_000_000
#: log lines are a side channel: they are given up sooner than results
LOG_RETRY_S = 30.0
#: the goodbye gets one try this long: the worker is on its way out
LEAVE_TIMEOUT_S = 2.0
#: slower than the client's: a server restarting under many workers should not be stormed
WORKER_BACKOFF = Backoff(first_s=0.5, max_s=10.0, jitter=0.2)

#: a final result waiting to be posted: job id, body, is_stream, attempt, delivered
_Waiting = tuple[str, bytes, bool, int | None, "asyncio.Future[None]"]


def _attempt_params(attempt: int | None) -> dict[str, str]:
    """The fence our posts carry: the attempt the job object named when we took it (the server
    then ignores a post from an earlier attempt of the same job, see docs/worker-protocol.md)."""
    return {} if attempt is None else {"attempt": str(attempt)}


class WorkerAuthError(RuntimeError):
    """The server refused the worker key (401/403); retrying cannot help."""


class RequestFailed(RuntimeError):
    """A request still failed after its retries, or got a reply that retrying cannot fix."""

    def __init__(self, what: str, detail: str, status: int | None = None) -> None:
        super().__init__(f"{what}: {detail}")
        self.status = status


class Transport:
    """The worker protocol over HTTP. `client` is the test seam (e.g. an httpx.MockTransport);
    without it a keep-alive client is created with the worker key as a bare Authorization header.
    """

    def __init__(
        self,
        url: str,
        endpoint: str,
        key: str,
        worker_id: str,
        *,
        client: httpx.AsyncClient | None = None,
        backoff: Backoff | None = None,
        poll_timeout_s: float = 90.0,
        post_timeout_s: float = 60.0,
        result_retry_s: float = 120.0,
    ) -> None:
        self.worker_id = worker_id
        self.base = f"{url.rstrip('/')}/v2/{endpoint}"
        self.backoff = backoff or WORKER_BACKOFF
        #: long-polls: the server holds take/stop up to 60 s, so our bound is above that
        self.poll_timeout_s = poll_timeout_s
        self.post_timeout_s = post_timeout_s
        #: how long a final result keeps being retried before it is given up as lost
        self.result_retry_s = result_retry_s
        headers = {
            "Authorization": key,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        self._batching = True
        #: False once the server showed it has no job-log route
        self.sends_logs = True
        self._waiting: list[_Waiting] = []
        #: set once the goodbye went out (or was tried)
        self._left = False
        self._flusher: asyncio.Task[None] | None = None
        # Requests go straight through aiohttp unless a test hands in its own httpx client.
        self._client = client
        self._fast = AiohttpClient(headers) if client is None else None
        if client is not None:
            client.headers.update(headers)

    async def aclose(self) -> None:
        """Say goodbye (`leave`), then close the connections: a transport is closed when its
        worker stops."""
        try:
            await self.leave()
        finally:
            await self._close_clients()

    async def leave(self) -> None:
        """Tell the server this worker is leaving (`ping?status=leaving`, our extension), so it
        forgets the worker at once instead of logging it lost `worker_lost_s` later. One short
        try, no retries: a server that is gone, or too old to know the status, loses nothing."""
        if self._left:
            return
        self._left = True
        url = f"{self.base}/ping/{self.worker_id}"
        try:
            async with asyncio.timeout(LEAVE_TIMEOUT_S):  # connecting included
                await self._send("GET", url, {"status": "leaving"}, None, LEAVE_TIMEOUT_S)
        except (httpx.TransportError, TimeoutError) as exc:
            log.debug("goodbye not delivered: %s", exc)

    async def _close_clients(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        if self._client is not None:
            await self._client.aclose()

    async def _send(
        self,
        method: str,
        url: str,
        params: dict[str, str] | None,
        content: bytes | None,
        timeout_s: float,
    ) -> Reply | httpx.Response:
        if self._fast is not None:
            return await self._fast.request(
                method, url, params=params, content=content, read_timeout_s=timeout_s
            )
        assert self._client is not None
        return await self._client.request(
            method,
            url,
            params=params,
            content=content,
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    async def _request(
        self,
        what: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        timeout_s: float,
        give_up_after_s: float | None,
    ) -> Reply | httpx.Response:
        """Send one request, retrying what `http_retry` says is worth retrying until it
        succeeds or `give_up_after_s` passes (None = forever, until cancelled)."""
        loop = asyncio.get_running_loop()
        deadline = None if give_up_after_s is None else loop.time() + give_up_after_s
        attempt = 0
        while True:
            detail: str
            retry_after: float | None = None
            try:
                response = await self._send(
                    method, f"{self.base}/{path}", params, content, timeout_s
                )
            except httpx.TransportError as exc:
                detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code in (401, 403):
                    raise WorkerAuthError(
                        f"{what}: the server refused the worker key (HTTP {response.status_code})"
                    )
                if not is_retryable_status(response.status_code):
                    return response
                detail = f"HTTP {response.status_code}"
                retry_after = retry_after_s(response.headers)
            wait_s = self.backoff.delay_s(attempt, retry_after)
            attempt += 1
            if deadline is not None and loop.time() + wait_s > deadline:
                raise RequestFailed(what, f"{detail}, gave up after {attempt} attempts")
            # First failure at INFO so a restarting server is quiet; repeats as warnings.
            level = logging.INFO if attempt == 1 else logging.WARNING
            log.log(level, "%s failed (%s); retrying in %.1f s", what, detail, wait_s)
            await asyncio.sleep(wait_s)

    async def take(
        self, n: int, job_in_progress: bool, wait_ms: int | None = None
    ) -> list[dict[str, Any]]:
        """Ask for up to n jobs (long-poll; `wait_ms` shortens the server's hold). Returns []
        for 204/400 or an empty reply; retries server trouble forever, so only cancellation
        or a refused key ends it early."""
        in_progress = "1" if job_in_progress else "0"
        if n > 1:
            path = f"job-take-batch/{self.worker_id}"
            params = {"batch_size": str(n), "job_in_progress": in_progress}
        else:
            path = f"job-take/{self.worker_id}"
            params = {"job_in_progress": in_progress}
        if wait_ms is not None:
            params["wait"] = str(wait_ms)
        response = await self._request(
            "job-take",
            "GET",
            path,
            params=params,
            timeout_s=self.poll_timeout_s,
            give_up_after_s=None,
        )
        if response.status_code != 200 or not response.content:
            if response.status_code not in (200, 204, 400):
                log.warning("job-take: unexpected HTTP %d, treated as no job", response.status_code)
            return []
        try:
            data = response.json()
        except ValueError:
            log.warning("job-take: reply is not JSON, treated as no job")
            return []
        items = data if isinstance(data, list) else [data]
        jobs = []
        for item in items:
            if isinstance(item, dict) and isinstance(item.get("id"), str) and "input" in item:
                jobs.append(item)
            else:
                log.warning("job-take: dropped a job without a string id and an input")
        if len(jobs) > n:
            # The server broke its promise; keep them all rather than lose jobs it leased to us.
            log.warning("job-take: asked for %d jobs, got %d", n, len(jobs))
        return jobs

    async def done(
        self, job_id: str, body: bytes, is_stream: bool, attempt: int | None = None
    ) -> None:
        """Post a final result or a progress update. Retries server trouble for
        `result_retry_s`; raises RequestFailed when the result could not be delivered."""
        response = await self._request(
            f"job-done {job_id}",
            "POST",
            f"job-done/{self.worker_id}/{job_id}",
            params={"isStream": "true" if is_stream else "false", **_attempt_params(attempt)},
            content=body,
            timeout_s=self.post_timeout_s,
            give_up_after_s=self.result_retry_s,
        )
        if response.status_code >= 400:
            raise RequestFailed(
                f"job-done {job_id}", f"HTTP {response.status_code}", response.status_code
            )

    async def finish(
        self, job_id: str, body: bytes, is_stream: bool, attempt: int | None = None
    ) -> None:
        """Post a final result, batched with others that finish meanwhile (see the module
        docstring). Same guarantees as `done`: returns once the server has it, raises
        RequestFailed when it could not be delivered."""
        if not self._batching or len(body) > MAX_BATCH_BYTES:
            await self.done(job_id, body, is_stream, attempt)
            return
        delivered = asyncio.get_running_loop().create_future()
        self._waiting.append((job_id, body, is_stream, attempt, delivered))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="job-done-batches")
        await asyncio.shield(delivered)

    async def _flush(self) -> None:
        """Post waiting results until none are left: alone through job-done, or together."""
        while self._waiting:
            batch: list[_Waiting] = []
            size = 0
            while self._waiting and len(batch) < MAX_BATCH:
                item = self._waiting[0]
                if batch and size + len(item[1]) > MAX_BATCH_BYTES:
                    break
                batch.append(self._waiting.pop(0))
                size += len(item[1])
            outcomes: list[BaseException | None]
            try:
                if len(batch) == 1 or not self._batching:
                    outcomes = await asyncio.gather(
                        *(self.done(*item[:4]) for item in batch), return_exceptions=True
                    )
                else:
                    outcomes = await self._post_batch(batch)
            except BaseException as exc:  # cancelled, or a bug: never leave a caller waiting
                for *_, delivered in batch + self._waiting:
                    if not delivered.done():
                        delivered.set_exception(RequestFailed("job-done", repr(exc)))
                self._waiting.clear()
                raise
            for (*_, delivered), outcome in zip(batch, outcomes, strict=True):
                if delivered.done():
                    continue
                if isinstance(outcome, BaseException):
                    delivered.set_exception(outcome)
                else:
                    delivered.set_result(None)

    async def _post_batch(self, batch: list[_Waiting]) -> list[BaseException | None]:
        items = b",".join(
            b'{"id":'
            + json.dumps(job_id).encode()
            + (b"" if attempt is None else b',"attempt":' + str(attempt).encode())
            + b',"result":'
            + body
            + b"}"
            for job_id, body, _, attempt, _ in batch
        )
        try:
            response = await self._request(
                "job-done-batch",
                "POST",
                f"job-done-batch/{self.worker_id}",
                content=b"[" + items + b"]",
                timeout_s=self.post_timeout_s,
                give_up_after_s=self.result_retry_s,
            )
        except (RequestFailed, WorkerAuthError) as exc:
            return [exc] * len(batch)
        if response.status_code == 200:
            return [None] * len(batch)
        if response.status_code in (404, 405):
            log.info("the server has no job-done-batch: posting results one by one")
            self._batching = False
        else:
            log.warning("job-done-batch: HTTP %d; posting these one by one", response.status_code)
        return await asyncio.gather(
            *(self.done(*item[:4]) for item in batch), return_exceptions=True
        )

    async def stream(self, job_id: str, body: bytes, attempt: int | None = None) -> None:
        """Post one stream chunk (`{"output": chunk}` already encoded); same retries as done."""
        response = await self._request(
            f"job-stream {job_id}",
            "POST",
            f"job-stream/{self.worker_id}/{job_id}",
            params={"isStream": "false", **_attempt_params(attempt)},
            content=body,
            timeout_s=self.post_timeout_s,
            give_up_after_s=self.result_retry_s,
        )
        if response.status_code >= 400:
            raise RequestFailed(
                f"job-stream {job_id}", f"HTTP {response.status_code}", response.status_code
            )

    async def log(self, job_id: str, body: bytes, attempt: int | None = None) -> None:
        """Post a batch of a job's log lines (a job-log body). Retries server trouble for
        LOG_RETRY_S; raises RequestFailed when the lines could not be delivered. An "ignored"
        reply (the job runs elsewhere now, or ended long ago) is not an error."""
        if not self.sends_logs:
            return
        response = await self._request(
            f"job-log {job_id}",
            "POST",
            f"job-log/{self.worker_id}/{job_id}",
            params=_attempt_params(attempt),
            content=body,
            timeout_s=self.post_timeout_s,
            give_up_after_s=LOG_RETRY_S,
        )
        if response.status_code in (404, 405) and not response.content.startswith(b"{"):
            log.info("the server has no job-log route: job logs stay in this worker's log")
            self.sends_logs = False
        elif response.status_code >= 400:
            raise RequestFailed(
                f"job-log {job_id}", f"HTTP {response.status_code}", response.status_code
            )

    async def stop_poll(self) -> list[str]:
        """Long-poll the stop channel; returns the ids to stop ([] for none)."""
        response = await self._request(
            "job-stop",
            "GET",
            f"job-stop/{self.worker_id}",
            timeout_s=self.poll_timeout_s,
            give_up_after_s=None,
        )
        if response.status_code != 200 or not response.content:
            return []
        try:
            data = response.json()
        except ValueError:
            return []
        ids = data.get("jobsToStop") if isinstance(data, dict) else None
        if not isinstance(ids, list):
            return []
        return [i for i in ids if isinstance(i, str)]

    async def register(self, timeout_s: float) -> int:
        """One try at `POST /endpoints/{ep}/workers/{wid}` (our scaler's route, not part of the
        RunPod protocol): the worker shows as initializing while it warms up. Returns the HTTP
        status; raises what the request raised."""
        base, _, endpoint = self.base.rpartition("/v2/")
        url = f"{base}/endpoints/{endpoint}/workers/{self.worker_id}"
        reply = await self._send("POST", url, None, None, timeout_s)
        return reply.status_code

    async def ping(self, job_ids: list[str], timeout_s: float) -> None:
        """One heartbeat naming the jobs held. A few quick retries only: the next beat is due
        soon anyway. Raises RequestFailed when it did not get through."""
        params = {"job_id": ",".join(job_ids)} if job_ids else None
        response = await self._request(
            "ping",
            "GET",
            f"ping/{self.worker_id}",
            params=params,
            timeout_s=timeout_s,
            give_up_after_s=timeout_s,
        )
        if response.status_code >= 400:
            raise RequestFailed("ping", f"HTTP {response.status_code}", response.status_code)
