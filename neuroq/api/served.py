"""The submit warning: a job sent to an endpoint that no worker has ever served.

Endpoints need no registration, so a misspelt endpoint id is a valid queue whose jobs wait,
silently, until their ttl (24 h by default) runs out. A submit to such an endpoint is still
accepted (a worker may be about to start), but its reply carries an `X-NeuroQ-Warning` header,
which the client logs and `neuroq send` prints on stderr.

"Served" is what the store can tell cheaply: the endpoint has a live worker (any state), or a
retained job of it was ever taken by a worker (IN_PROGRESS, COMPLETED or FAILED now, or retried:
every one of these went through a worker), or it is configured with a handler or command, whose
workers the scaler starts on demand, or it is the endpoint of `neuroq serve --worker`, whose
own workers may still be starting. A job taken but since TIMED_OUT or CANCELLED, or deleted
after its retention, does not count: an endpoint idle for longer than the retention with no
worker up warns again, which is true enough to be worth saying.

/run is on the hot path (over a thousand jobs/s), so the answer is cached per endpoint in this
process: "not served" for CACHE_S seconds, so a worker that starts silences the warning within
that time, and "served" (which stays true while the endpoint's workers or taken jobs last) for
SERVED_CACHE_S. Submits that find the answer expired share one look at the store.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request

from neuroq.jobs import now_ms
from neuroq.store.base import JobStore

HEADER = "X-NeuroQ-Warning"
#: how long a "not served" answer is reused for an endpoint
CACHE_S = 3.0
#: how long a "served" answer is reused for an endpoint
SERVED_CACHE_S = 30.0
#: more endpoints than this in the cache: the expired entries are dropped
_MAX_ENTRIES = 1024


def warning_text(endpoint_id: str) -> str:
    return (
        f"no worker has served endpoint {endpoint_id!r} yet; the job waits in its queue until "
        f"one attaches (check the endpoint id, or start one: neuroq worker HANDLER "
        f"--endpoint {endpoint_id})"
    )


async def is_served(store: JobStore, endpoint_id: str) -> bool:
    """Whether a worker serves or has served the endpoint (see the module docstring)."""
    health = await store.health(endpoint_id, now_ms())
    if any(health["workers"].values()):
        return True
    jobs = health["jobs"]
    if jobs["inProgress"] or jobs["completed"] or jobs["failed"] or jobs["retried"]:
        return True
    config = await store.get_endpoint(endpoint_id)
    return config is not None and config.runs_workers


class ServedCache:
    """`is_served` answers per endpoint, each reused for CACHE_S or SERVED_CACHE_S seconds."""

    def __init__(self) -> None:
        self._answers: dict[str, tuple[float, bool]] = {}
        self._looks: dict[str, asyncio.Future[bool]] = {}

    async def served(self, store: JobStore, endpoint_id: str) -> bool:
        now = time.monotonic()
        cached = self._answers.get(endpoint_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        look = self._looks.get(endpoint_id)
        if look is None:
            look = self._looks[endpoint_id] = asyncio.ensure_future(is_served(store, endpoint_id))
            look.add_done_callback(lambda done: self._remember(endpoint_id, done))
        # shield: a submit that goes away does not cancel the look the others wait for
        return await asyncio.shield(look)

    def _remember(self, endpoint_id: str, look: asyncio.Future[bool]) -> None:
        del self._looks[endpoint_id]
        if look.cancelled() or look.exception() is not None:
            return
        now = time.monotonic()
        if len(self._answers) >= _MAX_ENTRIES:
            self._answers = {k: v for k, v in self._answers.items() if v[0] > now}
        answer = look.result()
        self._answers[endpoint_id] = (now + (SERVED_CACHE_S if answer else CACHE_S), answer)


async def warning_headers(request: Request, endpoint_id: str) -> dict[str, str]:
    """The header a submit's reply carries when the endpoint was never served; else none."""
    state = request.app.state
    if endpoint_id in getattr(state, "local_endpoints", ()):
        return {}  # `serve --worker` starts workers for it (they may still be warming up)
    cache: ServedCache | None = getattr(state, "served_cache", None)
    if cache is None:
        cache = state.served_cache = ServedCache()
    if await cache.served(state.store, endpoint_id):
        return {}
    return {HEADER: warning_text(endpoint_id)}
