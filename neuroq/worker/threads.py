"""Reusable daemon threads for sync handlers and sync generators.

Why not a ThreadPoolExecutor: its threads are joined at interpreter exit, so one handler stuck in
C code would keep a stopping worker alive forever; daemon threads are abandoned instead. Why not a
new thread per job: starting a thread costs the event loop a blocking hand-shake (about half a
millisecond here), which for short jobs was the worker's largest per-job cost. So threads are
started on demand, kept while they are wanted, and retire after `idle_s` without work. There is
no upper bound: the worker's slots already bound how many sync jobs run at once.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable

log = logging.getLogger("neuroq.worker")

#: how long an idle thread waits for work before it exits
IDLE_S = 60.0


class DaemonThreads:
    def __init__(self, name: str = "neuroq-handler", idle_s: float = IDLE_S) -> None:
        self.name = name
        self.idle_s = idle_s
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        #: threads waiting for work that no submitted item has claimed yet
        self._idle = 0
        self._names = itertools.count(1)

    @property
    def idle(self) -> int:
        with self._lock:
            return self._idle

    def submit(self, fn: Callable[[], None]) -> None:
        """Run `fn` on an idle thread, or on a new one if none is idle. `fn` must not raise
        (callers deliver their own results and errors); if it does, the error is logged."""
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # claimed: that thread will not retire before taking an item
        self._work.put(fn)
        if spawn:
            name = f"{self.name}-{next(self._names)}"
            threading.Thread(target=self._serve, name=name, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                fn = self._work.get(timeout=self.idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:
                        self._idle -= 1
                        return
                # every idle thread is claimed: an item is on its way to one of us
                continue
            try:
                fn()
            except BaseException:
                log.exception("a handler thread's task raised")
            with self._lock:
                self._idle += 1
