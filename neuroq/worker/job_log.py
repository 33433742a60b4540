"""Per-job log capture: what a handler logs while it runs goes to its job's log on the server.

Attribution is by a context variable the runtime sets in each job's task: asyncio copies it into
every task the handler starts, and the runtime copies it into the thread a sync handler or sync
generator runs on, so a record belongs to the job whose handler (or code it called) emitted it,
whatever the concurrency. Records with no job in their context are not captured, and neither are
the runtime's own (`neuroq.worker`), which stay in the worker's log. Only `logging` records are
captured, as far as the worker's log level lets them through; print() output is not (it would
need sys.stdout swapped under every library in the process).

Capturing never blocks the handler: `emit` appends to a list under a short lock and wakes the
event loop when the list was empty; the runtime posts the lines in batches (job-log). A job keeps
at most MAX_LINES lines and MAX_CHARS characters of ordinary lines, each cut to MAX_LINE_CHARS,
with room kept for the failure traceback; past that, lines are dropped and the job's last post
says so (the server then stores one "... truncated" marker). The numbers are the server's
`LogLimits`, so nothing the worker sends is dropped there.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar

from neuroq.logs import redact

MAX_LINES = 1_000
MAX_CHARS = 256 * 1024
MAX_LINE_CHARS = 8 * 1024
#: the runtime's own loggers: their records are about the worker, not the job
RUNTIME_LOGGER = "neuroq.worker"


class JobLog:
    """The lines of one running job waiting to be posted. Thread-safe."""

    def __init__(self, wake: Callable[[], None]) -> None:
        """`wake` is called (from any thread) when a line arrives in an empty buffer."""
        self._wake = wake
        self._lock = threading.Lock()
        self._pending: list[dict[str, object]] = []
        self._lines = 0
        self._chars = 0
        self._dropped = False
        self.closed = False

    @property
    def full(self) -> bool:
        """No more ordinary lines fit (one line and MAX_LINE_CHARS stay for the traceback)."""
        return self._lines >= MAX_LINES - 1 or self._chars >= MAX_CHARS - MAX_LINE_CHARS

    def add(self, level: str, text: str, *, at_ms: int | None = None, final: bool = False) -> None:
        """Queue one line. `final` marks the failure traceback: it may use the room kept for it,
        and a long one keeps its end (where the exception is) rather than its start."""
        # keys never leave the worker in a log line, as in its own log
        text = clip(redact(text), MAX_LINE_CHARS, keep_end=final)
        with self._lock:
            if self.closed:
                return
            room = self._lines < MAX_LINES and self._chars + len(text) <= MAX_CHARS
            if not room or (self.full and not final):
                self._dropped = True
                return
            self._pending.append(
                {"at": at_ms or int(time.time() * 1000), "level": level, "line": text}
            )
            self._lines += 1
            self._chars += len(text)
            first = len(self._pending) == 1
        if first:
            self._wake()

    def take(self, *, last: bool = False) -> bytes | None:
        """The job-log body of the lines queued so far (None when there is nothing to send).
        Only the `last` one reports dropped lines, so the traceback still lands after them."""
        with self._lock:
            lines, self._pending = self._pending, []
            truncated = last and self._dropped
        if not lines and not truncated:
            return None
        body: dict[str, object] = {"lines": lines}
        if truncated:
            body["truncated"] = True
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode(
            "utf-8", "backslashreplace"
        )

    def drop(self) -> None:
        """Count a line that did not fit."""
        with self._lock:
            self._dropped = True

    @property
    def dropped(self) -> bool:
        with self._lock:
            return self._dropped

    @property
    def pending(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def close(self) -> None:
        """Take no more lines (a stopped sync handler's thread may still be logging)."""
        with self._lock:
            self.closed = True


def clip(text: str, limit: int, *, keep_end: bool = False) -> str:
    """`text` cut to at most `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(f" ... ({len(text)} characters cut) ... "))
    note = f"({len(text) - keep} characters cut)"
    return f"... {note} ... {text[-keep:]}" if keep_end else f"{text[:keep]} ... {note}"


#: the log of the job whose handler runs in this context (None outside a job)
CURRENT: ContextVar[JobLog | None] = ContextVar("neuroq_job_log", default=None)


class CaptureHandler(logging.Handler):
    """Copies each record emitted inside a job's context into that job's log."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        job_log = CURRENT.get()
        if job_log is None or job_log.closed:
            return
        if record.name == RUNTIME_LOGGER or record.name.startswith(RUNTIME_LOGGER + "."):
            return
        if job_log.full:
            job_log.drop()  # before formatting: a handler flooding its log stays cheap
            return
        try:
            text = self.format(record)
        except Exception:
            text = f"{record.msg!r} (could not be formatted)"
        job_log.add(record.levelname, text, at_ms=int(record.created * 1000))


_INSTALLED: list[CaptureHandler] = []
_INSTALL_LOCK = threading.Lock()


def install_capture() -> None:
    """Attach the capture handler to the root logger, once per process."""
    with _INSTALL_LOCK:
        if not _INSTALLED:
            handler = CaptureHandler()
            logging.getLogger().addHandler(handler)
            _INSTALLED.append(handler)
