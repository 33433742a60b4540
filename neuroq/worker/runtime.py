"""The worker runtime: take jobs, run the handler, post results, beat, obey stops, shut down.

It speaks the RunPod 1.12 worker protocol (see transport.py) but differs from the SDK's loop:

- Sync handlers and sync generators run on a thread of their own (reused, see threads.py), so a
  long sync handler never delays heartbeats, stop polls or other jobs, and `concurrency > 1`
  overlaps sync jobs too.
- A slot is taken *before* asking for work, so a full worker never fetches a job it cannot start;
  with more than one free slot it asks with job-take-batch.
- Every loop backs off on errors and never re-asks faster than `min_poll_interval_s` after an
  empty reply, so a misbehaving server cannot make it spin.
- A stopped job (cancelled or timed out on the server) posts nothing. Async handlers get
  CancelledError; a sync handler cannot be interrupted, so its late result is dropped, its slot
  is held until its thread returns, and it can poll `stop_requested(job)` to end early.
- SIGTERM/SIGINT: stop taking, give in-flight jobs `grace_s` to finish, then abandon the rest
  (the server requeues them when the worker is lost). A second signal skips the grace period.
  Jobs in a take reply that lands as the signal does are run within the same grace period: the
  server already shows them IN_PROGRESS, and dropping them would strand them until it finds the
  worker lost.
  A final post that has started is shielded from cancellation and awaited before exit.
- Progress updates are posted in order and always before the job's final result (the SDK can
  deliver them after it, runpod/runpod-python#250).
- What the handler logs while it runs, and the traceback of a failure, are posted to the job's
  log in batches (job_log.py), the rest before the final result.
- A warm-up hook (the handler module's `warmup`, or `--warmup`) runs before the first take. The
  worker registers as `initializing` meanwhile and sends nothing else, so the server and the
  scaler see it as starting until the hook returns; a hook that raises ends the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from neuroq.jobs import is_path_safe, new_worker_id
from neuroq.strict_json import JSONRejected
from neuroq.worker.handlers import (
    Handler,
    HandlerKind,
    Result,
    Warmup,
    encode,
    exception_body,
    load_handler,
    load_warmup,
    module_warmup,
    result_body,
    stream_error,
    stream_final_body,
)
from neuroq.worker.job_log import CURRENT, JobLog, install_capture
from neuroq.worker.threads import DaemonThreads
from neuroq.worker.transport import RequestFailed, Transport, WorkerAuthError

log = logging.getLogger("neuroq.worker")

#: how many sync-generator chunks may wait for their stream post before the generator pauses
STREAM_BUFFER = 32
#: how long shutdown waits for final posts that are still retrying
POST_DRAIN_S = 30.0
#: how long shutdown lets a take in flight finish, so a reply already on its way is read
TAKE_SETTLE_S = 0.5
#: how long a job's log lines gather before they are posted together
LOG_BATCH_S = 0.25
#: the longest a final result waits for the job's last log lines to be posted
LOG_FLUSH_S = 10.0
#: how long one `initializing` registration may take before warm-up goes on without it
REGISTER_TIMEOUT_S = 10.0
#: a `--burst` worker's take holds this long at most (`wait=`), so it learns within about a
#: second that the queue is empty instead of after the server's full hold
BURST_TAKE_WAIT_MS = 1000


class WarmupFailed(RuntimeError):
    """The warm-up hook raised: the worker never took a job and exits."""


# job id -> the running job, so module-level `progress_update(job, ...)` finds its worker.
_ACTIVE: dict[str, _RunningJob] = {}
# where sync handlers and sync generators run
_THREADS = DaemonThreads()


@dataclass(eq=False)
class _RunningJob:
    job: dict[str, Any]
    worker: Worker
    started_s: float
    #: False only for extra jobs a server sent beyond the slots we asked for
    has_slot: bool = True
    task: asyncio.Task[None] | None = None
    #: the server asked us to stop it: post nothing more for it
    stopped: bool = False
    #: set on stop, for sync handlers that poll `stop_requested(job)` and for the stream thread
    stop_event: threading.Event = field(default_factory=threading.Event)
    last_progress: asyncio.Task[None] | None = None
    #: the handler's captured log lines, and the task posting them
    log: JobLog | None = None
    log_post: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.job["id"])

    @property
    def attempt(self) -> int | None:
        """The attempt the server named in the job object, echoed on every post for this job."""
        attempt = self.job.get("attempt")
        return attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None


def progress_update(job: dict[str, Any], data: Any) -> None:
    """Report progress of a running job: the server shows `data` as the job's output while it
    stays IN_PROGRESS. Callable from sync handlers (any thread) and async handlers alike; it
    never blocks. Updates are sent in order and before the final result. Raises JSONRejected (a
    ValueError naming the path) at once if `data` cannot be sent as JSON; does nothing outside a
    worker."""
    job_id = job.get("id") if isinstance(job, dict) else None
    if not isinstance(job_id, str):
        raise ValueError("progress_update: `job` must be the job dict the handler received")
    try:
        body = encode({"status": "IN_PROGRESS", "output": data})
    except JSONRejected as exc:
        raise type(exc)(f"progress_update: {exc}") from None
    running = _ACTIVE.get(job_id)
    if running is None:
        log.debug("progress_update for job %s, which this process is not running: ignored", job_id)
        return
    running.worker.schedule_progress(running, body)


async def stream_update(job: dict[str, Any], chunk: Any) -> bool:
    """Post one stream chunk for a running job from a handler that is not a generator (a
    generator's yielded values are streamed for it). Returns once the post is done, so chunks
    arrive in order; False when this process is not running the job or it was stopped."""
    job_id = job.get("id") if isinstance(job, dict) else None
    if not isinstance(job_id, str):
        raise ValueError("stream_update: `job` must be the job dict the handler received")
    try:
        body = encode({"output": chunk})
    except JSONRejected as exc:
        raise type(exc)(f"stream_update: {exc}") from None
    running = _ACTIVE.get(job_id)
    if running is None or running.stopped:
        return False
    await running.worker.transport.stream(job_id, body, running.attempt)
    return True


def stop_requested(job: dict[str, Any]) -> bool:
    """True once the server asked to stop this job (cancelled or timed out). Long sync handlers
    can poll it to end early, since a thread cannot be interrupted from outside."""
    job_id = job.get("id") if isinstance(job, dict) else None
    running = _ACTIVE.get(job_id) if isinstance(job_id, str) else None
    return running is not None and running.stop_event.is_set()


class Worker:
    """One worker process's runtime. `run()` returns after a shutdown request (or, with
    `burst`, once the queue is empty and nothing is in flight) and every job is settled."""

    def __init__(
        self,
        handler: Handler,
        transport: Transport,
        *,
        concurrency: int = 1,
        burst: bool = False,
        ping_interval_s: float = 10.0,
        grace_s: float = 30.0,
        min_poll_interval_s: float = 1.0,
        warmup: Warmup | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if ping_interval_s <= 0:
            raise ValueError(f"ping_interval_s must be positive, got {ping_interval_s}")
        if grace_s < 0:
            raise ValueError(f"grace_s must not be negative, got {grace_s}")
        self.handler = handler
        self.transport = transport
        self.concurrency = concurrency
        self.burst = burst
        self.ping_interval_s = ping_interval_s
        self.grace_s = grace_s
        self.min_poll_interval_s = min_poll_interval_s
        #: run before the first take; None: none
        self.warmup = warmup
        self._warm_task: asyncio.Task[None] | None = None
        self._jobs: dict[str, _RunningJob] = {}
        self._posts: set[asyncio.Task[None]] = set()
        self._shutting_down = False
        self._take_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hurry: asyncio.Event | None = None
        #: counts of finished jobs by outcome, for tests and the exit log line
        self.counts: dict[str, int] = {"completed": 0, "failed": 0, "stopped": 0, "abandoned": 0}

    @property
    def worker_id(self) -> str:
        return self.transport.worker_id

    def held_ids(self) -> list[str]:
        """Jobs we hold and still work on, as reported in pings; stopped ones are left out so
        the server stops re-offering their stop signal."""
        return [job_id for job_id, rj in self._jobs.items() if not rj.stopped]

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._hurry = asyncio.Event()
        slots = asyncio.Semaphore(self.concurrency)
        install_capture()
        log.info(
            "worker %s started: handler %s (%s), concurrency %d%s",
            self.worker_id,
            self.handler.ref,
            self.handler.kind.value,
            self.concurrency,
            ", burst" if self.burst else "",
        )
        if self.warmup is not None:
            self._warm_task = asyncio.create_task(self._warm_up(self.warmup), name="warm-up")
            try:
                await self._warm_task
            except asyncio.CancelledError:
                if not self._shutting_down:
                    raise
            if self._shutting_down:
                log.info("worker %s stopped during warm-up", self.worker_id)
                return
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        stopper = asyncio.create_task(self._stop_loop(), name="job-stop")
        self._take_task = asyncio.create_task(self._take_loop(slots), name="job-take")
        failure: BaseException | None = None
        try:
            await self._take_task
        except asyncio.CancelledError:
            if not self._shutting_down:
                raise
        except WorkerAuthError as exc:
            log.error("%s; stopping", exc)
            failure = exc
        except Exception as exc:
            # A bug of ours: still settle the jobs in flight before the error surfaces.
            log.exception("job-take loop crashed; stopping")
            failure = exc
        self._shutting_down = True
        try:
            await self._drain()
        finally:
            for task in (heartbeat, stopper):
                task.cancel()
            await asyncio.gather(heartbeat, stopper, return_exceptions=True)
        c = self.counts
        log.info(
            "worker %s stopped: %d completed, %d failed, %d stopped, %d abandoned",
            self.worker_id,
            c["completed"],
            c["failed"],
            c["stopped"],
            c["abandoned"],
        )
        if failure is not None:
            raise failure

    def request_shutdown(self) -> None:
        """Stop taking jobs and let in-flight ones finish; a second call skips the grace period."""
        if self._shutting_down:
            if self._hurry is not None and not self._hurry.is_set():
                log.info("second shutdown request: not waiting for in-flight jobs")
                self._hurry.set()
            return
        self._shutting_down = True
        log.info("shutdown requested: taking no more jobs")
        if self._warm_task is not None and not self._warm_task.done():
            # An async hook is cancelled; a sync one is left to its daemon thread.
            self._warm_task.cancel()
        if self._take_task is not None:
            self._take_task.cancel()

    async def _warm_up(self, warmup: Warmup) -> None:
        """Run the hook while registered as `initializing`. Registration is repeated every
        ping interval, so a long warm-up is not taken for a lost worker; no ping or take goes
        out before the hook returns, since either would show the worker ready."""
        log.info("warm-up %s running", warmup.ref)
        started = time.monotonic()
        announcer = asyncio.create_task(self._announce_loop(), name="register")
        try:
            if warmup.is_async:
                await warmup.func()
            else:
                value = await _on_daemon_thread(warmup.func)
                if inspect.isawaitable(value):  # e.g. a partial of an async function
                    await value
        except Exception as exc:
            log.debug("warm-up %s failed", warmup.ref, exc_info=True)
            raise WarmupFailed(
                f"warm-up {warmup.ref} failed after {time.monotonic() - started:.1f} s: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        finally:
            announcer.cancel()
            await asyncio.gather(announcer, return_exceptions=True)
        log.info("warm-up %s done in %.1f s", warmup.ref, time.monotonic() - started)

    async def _announce_loop(self) -> None:
        while True:
            await self._announce()
            await asyncio.sleep(self.ping_interval_s)

    async def _announce(self) -> None:
        """One best-effort `initializing` registration (the scaler's route, worker key). A
        server without the route, or one that is down, only means /health does not show the
        worker until it is ready."""
        try:
            status = await self.transport.register(REGISTER_TIMEOUT_S)
        except Exception as exc:
            log.debug("registering as initializing failed: %s", exc)
            return
        if status >= 400:
            log.debug("registering as initializing: HTTP %d", status)

    async def _take_loop(self, slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        while not self._shutting_down:
            # A slot first, so a full worker never fetches; then every other free slot.
            await slots.acquire()
            n = 1
            while n < self.concurrency and not slots.locked():
                await slots.acquire()
                n += 1
            started = loop.time()
            # Its own task, so shutdown cancelling this loop cannot drop a reply being read.
            wait_ms = BURST_TAKE_WAIT_MS if self.burst else None
            take = asyncio.ensure_future(
                self.transport.take(n, job_in_progress=bool(self.held_ids()), wait_ms=wait_ms)
            )
            try:
                jobs = await asyncio.shield(take)
            except BaseException as exc:
                for _ in range(n):
                    slots.release()
                if isinstance(exc, asyncio.CancelledError):
                    await self._start_late_take(take, slots)
                raise
            for _ in range(max(0, n - len(jobs))):
                slots.release()
            for i, job in enumerate(jobs):
                self._start(job, slots, has_slot=i < n)
            if not jobs:
                if self.burst and not self._jobs:
                    log.info("queue empty and no job in flight: burst worker exiting")
                    return
                # A server that answers at once instead of long-polling must not make us spin.
                remaining = self.min_poll_interval_s - (loop.time() - started)
                if remaining > 0:
                    await asyncio.sleep(remaining)

    async def _start_late_take(
        self, take: asyncio.Future[list[dict[str, Any]]], slots: asyncio.Semaphore
    ) -> None:
        """Shutdown began while a take was out. A reply already on its way carries jobs the
        server has leased to us and shows IN_PROGRESS: read it (briefly) and run them within
        the grace period like any in-flight job, rather than strand them until the server finds
        us lost. A take still waiting is cancelled, and the server releases what it could not
        deliver."""
        done, _ = await asyncio.wait({take}, timeout=TAKE_SETTLE_S)
        if not done:
            take.cancel()
            await asyncio.wait({take})
        if take.cancelled() or take.exception() is not None:
            return
        for job in take.result():
            log.info(
                "job %s arrived as shutdown began: running it within the grace period", job["id"]
            )
            self._start(job, slots, has_slot=False)

    def _start(self, job: dict[str, Any], slots: asyncio.Semaphore, has_slot: bool) -> None:
        job_id = job["id"]
        if job_id in self._jobs:
            log.warning("job %s delivered again while still running: ignored", job_id)
            if has_slot:
                slots.release()
            return
        assert self._loop is not None
        rj = _RunningJob(job=job, worker=self, started_s=self._loop.time(), has_slot=has_slot)
        loop = self._loop
        # called from handler threads too; closed loop = exiting, nobody posts anymore
        rj.log = JobLog(lambda: _call_soon(loop, self._log_ready, rj))
        self._jobs[job_id] = rj
        _ACTIVE[job_id] = rj
        rj.task = asyncio.create_task(self._run_job(rj, slots), name=f"job-{job_id}")

    async def _run_job(self, rj: _RunningJob, slots: asyncio.Semaphore) -> None:
        log.info("job %s started", rj.id)
        CURRENT.set(rj.log)  # this task's context: the handler's records go to the job's log
        try:
            try:
                result = await self._execute(rj)
            except asyncio.CancelledError:
                if rj.stopped:
                    self._finish_log(rj, "stopped", "stopped by the server; no result posted")
                    if self._logs_unsent(rj):
                        self._track(asyncio.create_task(self._flush_logs(rj)))
                else:
                    self._finish_log(rj, "abandoned", "abandoned at shutdown; the server requeues")
                return
            if rj.stopped or result is None:
                self._finish_log(rj, "stopped", "stopped by the server; late result dropped")
                if self._logs_unsent(rj):
                    self._track(asyncio.create_task(self._flush_logs(rj)))
                return
            if rj.last_progress is not None:
                await rj.last_progress  # progress never lands after the final result
            # the last lines (a traceback, say) before the result, so a reader that sees the
            # job end sees its whole log; bounded, and shielded like the result post. A job
            # that logged nothing costs no task switch here.
            if self._logs_unsent(rj):
                await asyncio.shield(self._track(asyncio.create_task(self._flush_logs(rj))))
            post = asyncio.create_task(self._post_final(rj, result), name=f"done-{rj.id}")
            self._posts.add(post)
            post.add_done_callback(self._posts.discard)
            # Shielded: cancelling the job now must not leave its result half-posted.
            await asyncio.shield(post)
        finally:
            if rj.log is not None:
                rj.log.close()
            self._jobs.pop(rj.id, None)
            _ACTIVE.pop(rj.id, None)
            if rj.has_slot:
                slots.release()

    def _track(self, task: asyncio.Task[None]) -> asyncio.Task[None]:
        """Keep a post task referenced until it ends; shutdown waits for these."""
        self._posts.add(task)
        task.add_done_callback(self._posts.discard)
        return task

    def _log_ready(self, rj: _RunningJob) -> None:
        """Lines arrived in the job's empty log buffer: start a poster unless one runs (it
        posts until the buffer is empty, so lines added meanwhile go with it)."""
        if rj.log_post is None or rj.log_post.done():
            rj.log_post = self._track(asyncio.create_task(self._post_logs(rj)))

    def _logs_unsent(self, rj: _RunningJob) -> bool:
        if rj.log is None:
            return False
        posting = rj.log_post is not None and not rj.log_post.done()
        return posting or rj.log.pending or rj.log.dropped

    async def _post_logs(self, rj: _RunningJob) -> None:
        CURRENT.set(None)  # what posting logs (aiohttp, retries) is never part of the job's log
        assert rj.log is not None
        while rj.log.pending:
            await asyncio.sleep(LOG_BATCH_S)
            await self._send_logs(rj, rj.log.take())

    async def _flush_logs(self, rj: _RunningJob) -> None:
        """Post what is left of the job's log, after any batch in flight, within LOG_FLUSH_S."""
        CURRENT.set(None)
        log_ = rj.log
        if log_ is None:
            return
        log_.close()
        poster = rj.log_post
        try:
            async with asyncio.timeout(LOG_FLUSH_S):
                if poster is not None and not poster.done():
                    await asyncio.wait({poster})
                await self._send_logs(rj, log_.take(last=True))
        except TimeoutError:
            log.warning("job %s: its last log lines were not posted in time", rj.id)

    async def _send_logs(self, rj: _RunningJob, body: bytes | None) -> None:
        if body is None:
            return
        try:
            await self.transport.log(rj.id, body, rj.attempt)
        except (RequestFailed, WorkerAuthError) as exc:
            log.warning("job %s: log lines lost: %s", rj.id, exc)

    def _finish_log(self, rj: _RunningJob, outcome: str, message: str) -> None:
        assert self._loop is not None
        self.counts[outcome] += 1
        log.info("job %s %s after %.2f s", rj.id, message, self._loop.time() - rj.started_s)

    async def _post_final(self, rj: _RunningJob, result: Result) -> None:
        try:
            body = encode(result.body)
            outcome = "failed" if result.failed else "completed"
        except Exception as exc:  # anything else would leave the job to be lost and retried
            reason = _unencodable(exc)
            log.error("job %s: output is not JSON-encodable: %s", rj.id, reason)
            body = encode({"error": f"handler output is not JSON-encodable: {reason}"})
            outcome = "failed"
        try:
            await self.transport.finish(rj.id, body, result.is_stream, rj.attempt)
        except (RequestFailed, WorkerAuthError) as exc:
            log.error("job %s: result could not be delivered and is lost: %s", rj.id, exc)
            outcome = "failed"
        self._finish_log(rj, outcome, outcome)

    async def _execute(self, rj: _RunningJob) -> Result | None:
        """Run the handler; None means it noticed a stop and ended without a result."""
        kind = self.handler.kind
        try:
            if kind is HandlerKind.ASYNC:
                return Result(result_body(await self.handler.func(rj.job)))
            if kind is HandlerKind.SYNC:
                value = await self._in_thread(rj, self.handler.func, rj.job)
                if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
                    value = await value  # e.g. a partial or lambda around an async function
                return Result(result_body(value))
            if kind is HandlerKind.ASYNC_GENERATOR:
                return await self._stream_async(rj)
            return await self._stream_sync(rj)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            assert self._loop is not None
            if rj.log is not None:
                rj.log.add("ERROR", "".join(traceback.format_exception(exc)).rstrip(), final=True)
            log.error(
                "job %s: handler raised %s after %.2f s",
                rj.id,
                type(exc).__name__,
                self._loop.time() - rj.started_s,
                exc_info=exc,
            )
            return Result(exception_body(exc), is_stream=kind.streams)

    async def _in_thread(self, rj: _RunningJob, func: Callable[..., Any], *args: Any) -> Any:
        return await _on_daemon_thread(func, *args)

    async def _send_chunk(self, rj: _RunningJob, index: int, chunk: Any) -> Result | None:
        """Stream one chunk; returns a final Result when the chunk ends the job instead."""
        error = stream_error(chunk)
        if error is not None:
            return Result({"error": error}, is_stream=True)
        try:
            body = encode({"output": chunk})
        except Exception as exc:
            message = f"stream chunk {index} is not JSON-encodable: {_unencodable(exc)}"
            log.error("job %s: %s", rj.id, message)
            return Result({"error": message}, is_stream=True)
        if rj.stopped:
            return None
        try:
            await self.transport.stream(rj.id, body, rj.attempt)
        except RequestFailed as exc:
            log.error("job %s: stream chunk %d lost: %s", rj.id, index, exc)
        return None

    async def _stream_async(self, rj: _RunningJob) -> Result | None:
        chunks: list[Any] = []
        agen = self.handler.func(rj.job)
        try:
            index = 0
            async for chunk in agen:
                final = await self._send_chunk(rj, index, chunk)
                if final is not None:
                    return final
                if rj.stopped:
                    return None
                if self.handler.aggregate:
                    chunks.append(chunk)
                index += 1
        finally:
            await agen.aclose()
        return Result(stream_final_body(chunks, self.handler.aggregate), is_stream=True)

    async def _stream_sync(self, rj: _RunningJob) -> Result | None:
        """Drive a sync generator in one thread (thread-local state such as torch's grad mode
        stays valid across yields); chunks come back through a bounded hand-off."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        space = threading.Semaphore(STREAM_BUFFER)
        quit_ = threading.Event()
        func = self.handler.func
        context = contextvars.copy_context()

        def put(item: tuple[str, Any]) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed at exit
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def should_quit() -> bool:
            return quit_.is_set() or rj.stop_event.is_set()

        def produce() -> None:
            gen = None
            try:
                gen = func(rj.job)
                for chunk in gen:
                    while not space.acquire(timeout=0.2):
                        if should_quit():
                            break
                    if should_quit():
                        put(("stopped", None))
                        return
                    put(("chunk", chunk))
                put(("end", None))
            except BaseException as exc:
                if not isinstance(exc, Exception):
                    exc = RuntimeError(f"handler raised {type(exc).__name__}: {exc}")
                put(("error", exc))
            finally:
                if gen is not None:
                    try:
                        gen.close()  # runs the generator's finally blocks in its own thread
                    except Exception:
                        log.exception("job %s: closing the generator raised", rj.id)

        _THREADS.submit(lambda: context.run(produce))
        chunks: list[Any] = []
        index = 0
        try:
            while True:
                tag, value = await queue.get()
                if tag == "end":
                    break
                if tag == "stopped":
                    return None
                if tag == "error":
                    raise value
                space.release()
                final = await self._send_chunk(rj, index, value)
                if final is not None:
                    return final
                if self.handler.aggregate:
                    chunks.append(value)
                index += 1
        finally:
            quit_.set()
        return Result(stream_final_body(chunks, self.handler.aggregate), is_stream=True)

    def stop_job(self, job_id: str) -> bool:
        """Act on a stop signal; returns True if it concerned a job we were still working on."""
        rj = self._jobs.get(job_id)
        if rj is None or rj.stopped:
            return False
        rj.stopped = True
        rj.stop_event.set()
        log.info("job %s: stop requested by the server", job_id)
        # A sync stream thread notices the event at its next chunk; a sync function cannot be
        # interrupted, so its task keeps waiting (holding the slot) and drops the result.
        if not self.handler.kind.in_thread and rj.task is not None:
            rj.task.cancel()
        return True

    def schedule_progress(self, rj: _RunningJob, body: bytes) -> None:
        """Queue a progress post from any thread, chained after the previous one."""
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._add_progress(rj, body)
        else:
            with contextlib.suppress(RuntimeError):  # loop closed at exit
                loop.call_soon_threadsafe(self._add_progress, rj, body)

    def _add_progress(self, rj: _RunningJob, body: bytes) -> None:
        if rj.stopped or rj.id not in self._jobs:
            return
        previous = rj.last_progress
        rj.last_progress = asyncio.create_task(self._post_progress(rj, body, previous))

    async def _post_progress(
        self, rj: _RunningJob, body: bytes, previous: asyncio.Task[None] | None
    ) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        if rj.stopped:
            return
        try:
            await self.transport.done(rj.id, body, False, rj.attempt)
        except (RequestFailed, WorkerAuthError) as exc:
            log.warning("job %s: progress update lost: %s", rj.id, exc)

    async def _heartbeat_loop(self) -> None:
        timeout_s = max(2 * self.ping_interval_s, 5.0)
        while True:
            try:
                await self.transport.ping(self.held_ids(), timeout_s)
            except (RequestFailed, WorkerAuthError) as exc:
                log.warning("heartbeat failed: %s", exc)
            await asyncio.sleep(self.ping_interval_s)

    async def _stop_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            acted = False
            try:
                for job_id in await self.transport.stop_poll():
                    acted = self.stop_job(job_id) or acted
            except WorkerAuthError as exc:
                log.warning("job-stop: %s", exc)
            # The server re-offers ids until our pings stop naming them: no spinning meanwhile.
            if not acted:
                remaining = self.min_poll_interval_s - (loop.time() - started)
                if remaining > 0:
                    await asyncio.sleep(remaining)

    async def _drain(self) -> None:
        """Wait for in-flight jobs up to grace_s (or a second signal), abandon the rest, then
        wait for final posts that are still being retried."""
        assert self._loop is not None and self._hurry is not None
        loop = self._loop
        deadline = loop.time() + self.grace_s
        if self._jobs:
            log.info("waiting up to %.0f s for %d in-flight jobs", self.grace_s, len(self._jobs))
        hurry = asyncio.create_task(self._hurry.wait())
        try:
            while self._jobs and not self._hurry.is_set():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                tasks: set[asyncio.Future[Any]] = {
                    rj.task for rj in self._jobs.values() if rj.task is not None
                }
                await asyncio.wait(
                    tasks | {hurry}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            hurry.cancel()
        leftover = [rj.task for rj in self._jobs.values() if rj.task is not None]
        if leftover:
            log.warning("grace period over: abandoning %d jobs", len(leftover))
            for task in leftover:
                task.cancel()
            await asyncio.wait(leftover, timeout=5.0)
        if self._posts:
            await asyncio.wait(set(self._posts), timeout=POST_DRAIN_S)


async def _on_daemon_thread(func: Callable[..., Any], *args: Any) -> Any:
    """Run func on one of the daemon handler threads (see threads.py for why not
    asyncio.to_thread), in a copy of the caller's context (so log lines keep their job)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def deliver(setter: Callable[[Any], None], value: Any) -> None:
        def settle() -> None:
            if not future.done():
                setter(value)

        # A closed loop means we are exiting and nobody waits for this result.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle)

    def target() -> None:
        try:
            value = context.run(func, *args)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                exc = RuntimeError(f"handler raised {type(exc).__name__}: {exc}")
            deliver(future.set_exception, exc)
        else:
            deliver(future.set_result, value)

    _THREADS.submit(target)
    return await future


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: we are exiting
        loop.call_soon_threadsafe(fn, *args)


def _unencodable(exc: Exception) -> str:
    """Why encode failed: JSONRejected says it with the path; anything else (a bug, or a dict
    subclass that raises while iterated) is named by its type."""
    reason = str(exc) if isinstance(exc, JSONRejected) else f"{type(exc).__name__}: {exc}"
    # The reason goes out as JSON itself: surrogates in a foreign message become escapes.
    return reason.encode("utf-8", "backslashreplace").decode()


def _validate(url: str, endpoint: str, key: str, worker_id: str) -> None:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"url must start with http:// or https://, got {url!r}")
    if not is_path_safe(endpoint):
        raise ValueError(f"endpoint must be 1-128 characters of [A-Za-z0-9_-], got {endpoint!r}")
    if not is_path_safe(worker_id):
        raise ValueError(f"worker_id must be 1-128 characters of [A-Za-z0-9_-], got {worker_id!r}")
    if not key:
        raise ValueError("key: a worker key is required (flag --key or NEUROQ_WORKER_KEY)")


async def arun_worker(
    handler_ref: str | Handler,
    url: str,
    endpoint: str,
    key: str,
    concurrency: int = 1,
    worker_id: str | None = None,
    burst: bool = False,
    *,
    ping_interval_s: float = 10.0,
    grace_s: float = 30.0,
    aggregate: bool | None = None,
    warmup: str | Warmup | None = None,
    install_signal_handlers: bool = False,
    client: httpx.AsyncClient | None = None,
) -> Worker:
    """Load the handler, connect and run a worker until it shuts down; returns it (for counts).

    `warmup` (a `MODULE:FUNC` reference or a loaded hook) runs before the first take; None
    means the handler module's own `warmup` function, if it has one. `client` replaces the HTTP
    client (tests); `install_signal_handlers` hooks SIGTERM/SIGINT to a graceful shutdown (main
    thread only). Raises WarmupFailed when the hook raises."""
    worker_id = worker_id or new_worker_id()
    _validate(url, endpoint, key, worker_id)
    handler = (
        handler_ref
        if isinstance(handler_ref, Handler)
        else load_handler(handler_ref, aggregate=aggregate)
    )
    hook = load_warmup(warmup) if isinstance(warmup, str) else warmup or module_warmup(handler)
    transport = Transport(url, endpoint, key, worker_id, client=client)
    worker = Worker(
        handler,
        transport,
        concurrency=concurrency,
        burst=burst,
        ping_interval_s=ping_interval_s,
        grace_s=grace_s,
        warmup=hook,
    )
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if install_signal_handlers else ()
    for sig in signals:
        loop.add_signal_handler(sig, worker.request_shutdown)
    try:
        await worker.run()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        await transport.aclose()
    return worker


def run_worker(
    handler_ref: str | Handler,
    url: str,
    endpoint: str,
    key: str,
    concurrency: int = 1,
    worker_id: str | None = None,
    burst: bool = False,
    **options: Any,
) -> Worker:
    """Blocking `arun_worker` with SIGTERM/SIGINT handled; see that function for options.
    Runs on uvloop where it is installed (it comes with uvicorn[standard]): the worker's own
    per-job cost is mostly event-loop and socket work, which uvloop does in C."""
    options.setdefault("install_signal_handlers", True)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(
            arun_worker(handler_ref, url, endpoint, key, concurrency, worker_id, burst, **options)
        )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
