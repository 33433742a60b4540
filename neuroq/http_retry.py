"""When a failed HTTP request is worth sending again, and how long to wait first.

One policy for the client and the worker, so the two cannot drift apart: connection errors,
408, 429 and 5xx replies are retried; the wait doubles from attempt to attempt up to a cap,
unless the server says how long with Retry-After, in either of RFC 9110's forms (delay-seconds
or an HTTP-date). What stays with each caller is how many attempts it makes (the client gives
up after a few, the worker keeps a result going for minutes and a long-poll forever), how fast
its backoff grows (its own `Backoff`), and what a refused key means.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: a Retry-After beyond this is treated as this, so one header cannot stall a caller for hours
MAX_RETRY_AFTER_S = 60.0


def is_retryable_status(status: int) -> bool:
    """408 (the server gave up waiting for the request), 429 (too many requests) and any 5xx:
    replies that say "not now" rather than "not like this"."""
    return status in (408, 429) or status >= 500


def parse_retry_after(value: str | None, now_epoch_s: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value (delay-seconds or an HTTP-date); None if absent
    or unreadable. A date in the past means no wait."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if now_epoch_s is None:
        now_epoch_s = time.time()
    return max(0.0, when.timestamp() - now_epoch_s)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The Retry-After of a reply, in seconds. `headers` must look names up case-insensitively,
    as httpx's and aiohttp's do."""
    return parse_retry_after(headers.get("retry-after"))


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff: `first_s`, twice that, ... up to `max_s`. `jitter` (a
    fraction) shortens each delay by up to that much at random, so that many workers failing
    together do not all come back in the same instant."""

    first_s: float
    max_s: float
    jitter: float = 0.0

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """The wait after the `attempt`-th failure (0-based); the server's Retry-After, when it
        sent one, instead of the backoff, up to MAX_RETRY_AFTER_S."""
        if retry_after_s is not None:
            return min(retry_after_s, MAX_RETRY_AFTER_S)
        # The exponent is bounded: past a thousand attempts, 2**attempt no longer fits a float.
        delay = min(self.max_s, self.first_s * 2 ** min(attempt, 64))
        if self.jitter:
            delay *= random.uniform(1.0 - self.jitter, 1.0)
        return delay
