"""Ending the held worker long-polls when the server stops.

On SIGTERM uvicorn stops accepting connections, waits up to its graceful timeout (5 s) for the
requests in flight, cancels what is left with a traceback each, and only then runs the app's
lifespan shutdown. An attached worker always holds a job-take and a job-stop poll, for up to
a minute each, so every stop took the full 5 s and logged two tracebacks. `ServerStop.begin` is
called the moment uvicorn's shutdown starts (neuroq.api.commands) and again by the lifespan (for
servers that run it first); the held polls wake at once and answer 204, exactly as at the end of
an ordinary hold, and a poll that arrives afterwards is answered 204 without taking a job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from neuroq.store.base import Notifier


class ServerStop:
    """Whether this server is stopping, and the notifier topics its long-polls sleep on."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.stopping = False
        #: topic -> how many long-polls sleep on it now
        self._held: dict[str, int] = {}

    def reset(self) -> None:
        """At lifespan start: an app may be served again after a stop (in tests)."""
        self.stopping = False

    def begin(self) -> None:
        """Mark the server stopping and wake every held long-poll; safe to call twice."""
        if self.stopping:
            return
        self.stopping = True
        self.notifier.publish_all(set(self._held))

    @contextlib.contextmanager
    def holding(self, topic: str) -> Iterator[None]:
        """Count a long-poll sleeping on `topic`, so that `begin` knows to wake it."""
        self._held[topic] = self._held.get(topic, 0) + 1
        try:
            yield
        finally:
            left = self._held[topic] - 1
            if left:
                self._held[topic] = left
            else:
                del self._held[topic]
