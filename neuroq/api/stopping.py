"""Ending the held long-polls, the workers' and the clients', when the server stops.

On SIGTERM uvicorn stops accepting connections, waits up to its graceful timeout (5 s) for the
requests in flight, cancels what is left with a traceback each, and only then runs the app's
lifespan shutdown. An attached worker always holds a job-take and a job-stop poll, for up to
a minute each, and a client may hold a status?wait, runsync, status-sync, an SSE stream or an
OpenAI request for as long; left alone, every stop took the full 5 s and logged a traceback per
held request. `ServerStop.begin` is called the moment uvicorn's shutdown starts
(neuroq.api.commands) and again by the lifespan (for servers that run it first); every held
poll wakes at once and answers as at the end of an ordinary hold, and a poll that arrives
afterwards does not hold at all:

- worker job-take and job-stop: 204, no job taken;
- status?wait, runsync, status-sync, stream?wait (JSON): the job as it is now;
- the SSE stream: it ends without its `event: status`, so a client reconnects with
  Last-Event-ID (to this server once it is back, or to another sharing the store);
- OpenAI requests: 503 `server_stopping` with Retry-After before the reply has started, an
  error event mid-stream; the job is cancelled, as when the client leaves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from starlette.requests import Request

from neuroq.store.base import Notifier, wait_until

T = TypeVar("T")


class ServerStop:
    """Whether this server is stopping, and the notifier topics its long-polls sleep on."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.stopping = False
        #: (notifier, topic) -> how many long-polls sleep on it now
        self._held: dict[tuple[Notifier, str], int] = {}

    def reset(self) -> None:
        """At lifespan start: an app may be served again after a stop (in tests)."""
        self.stopping = False

    def begin(self) -> None:
        """Mark the server stopping and wake every held long-poll; safe to call twice."""
        if self.stopping:
            return
        self.stopping = True
        for notifier, topic in list(self._held):
            notifier.publish(topic)

    @contextlib.contextmanager
    def holding(self, topic: str, notifier: Notifier | None = None) -> Iterator[None]:
        """Count a long-poll sleeping on `topic` of `notifier` (the store's by default), so
        that `begin` knows to wake it."""
        key = (notifier or self.notifier, topic)
        self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            left = self._held[key] - 1
            if left:
                self._held[key] = left
            else:
                del self._held[key]

    async def wait(
        self, topic: str, since_version: int, timeout_s: float, notifier: Notifier | None = None
    ) -> bool:
        """`Notifier.wait` on `notifier` (the store's by default) that also ends when the
        server stops, at once if it already has: for a poll that only waits for a version to
        move (the dashboard's live parts). True when the topic moved, the stop's wake-up
        included."""
        if self.stopping:
            return False
        chosen = notifier or self.notifier
        with self.holding(topic, chosen):
            return await chosen.wait(topic, since_version, timeout_s)

    async def wait_until(
        self,
        topic: str,
        check: Callable[[], Awaitable[T | None]],
        timeout_s: float,
        recheck_s: float,
        *,
        since: int | None = None,
    ) -> T | None:
        """`neuroq.store.base.wait_until` on this server's notifier that also ends, with None,
        when the server stops (at once if it already has). A None is a timeout to the caller,
        which then answers as at the end of its hold; one that must tell the two apart reads
        `stopping`."""
        if self.stopping:
            return None

        async def unless_stopping() -> T | _Stopped | None:
            return _STOPPED if self.stopping else await check()

        with self.holding(topic):
            found: T | _Stopped | None = await wait_until(
                self.notifier, topic, unless_stopping, timeout_s, recheck_s, since=since
            )
        return None if isinstance(found, _Stopped) else found


class _Stopped:
    """What a held poll's check returns once the server stops (None would mean "not yet")."""


_STOPPED = _Stopped()


def server_stop(request: Request, notifier: Notifier) -> ServerStop:
    """The app's ServerStop; for a request served outside `create_app`'s app (unit tests that
    call a handler directly), one that never begins, on `notifier`."""
    app = request.scope.get("app")
    stop = getattr(app.state, "server_stop", None) if app is not None else None
    return stop if isinstance(stop, ServerStop) else ServerStop(notifier)
