"""The retry policy shared by the client and the worker (`neuroq.http_retry`): which replies are
retried, both forms of Retry-After, and the backoff. The drivers' use of it is tested in
test_client_retries.py and tests/worker/test_worker_runtime.py."""

from __future__ import annotations

from email.utils import formatdate

import httpx
import pytest

from neuroq.http_retry import (
    MAX_RETRY_AFTER_S,
    Backoff,
    is_retryable_status,
    parse_retry_after,
    retry_after_s,
)


@pytest.mark.parametrize(
    ("status", "retried"),
    [(200, False), (400, False), (401, False), (403, False), (404, False), (408, True),
     (413, False), (429, True), (500, True), (502, True), (503, True), (504, True)],
)  # fmt: skip
def test_which_statuses_are_retried(status: int, retried: bool) -> None:
    assert is_retryable_status(status) is retried


def test_retry_after_as_delay_seconds() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("-5") == 0.0


def test_retry_after_as_an_http_date() -> None:
    date = formatdate(1_000_010, usegmt=True)  # "Mon, 12 Jan 1970 13:46:50 GMT"
    assert parse_retry_after(date, now_epoch_s=1_000_000) == pytest.approx(10)
    assert parse_retry_after(date, now_epoch_s=1_000_020) == 0.0  # already past


def test_absent_or_unreadable_retry_after_is_none() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("") is None


def test_retry_after_is_read_from_either_librarys_headers() -> None:
    assert retry_after_s(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert retry_after_s(httpx.Headers({})) is None


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=0.1, max_s=2.0)
    assert [backoff.delay_s(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_jitter_only_shortens_the_delay() -> None:
    backoff = Backoff(first_s=1.0, max_s=1.0, jitter=0.2)
    delays = {backoff.delay_s(0) for _ in range(200)}
    assert all(0.8 <= d <= 1.0 for d in delays)
    assert len(delays) > 1


def test_retry_after_replaces_the_backoff_up_to_a_cap() -> None:
    backoff = Backoff(first_s=0.1, max_s=2.0, jitter=0.2)
    assert backoff.delay_s(0, retry_after_s=5.0) == 5.0
    assert backoff.delay_s(3, retry_after_s=0.0) == 0.0
    assert backoff.delay_s(0, retry_after_s=99_999.0) == MAX_RETRY_AFTER_S


def test_a_long_outage_does_not_overflow_the_backoff() -> None:
    """The worker retries a long-poll forever, counting attempts: at 10 s apiece, attempt 1,100
    comes about three hours into an outage, where 0.5 * 2**1100 used to raise OverflowError and
    end the worker's take loop."""
    backoff = Backoff(first_s=0.5, max_s=10.0, jitter=0.2)
    assert 8.0 <= backoff.delay_s(1_100) <= 10.0
    assert 8.0 <= backoff.delay_s(10**6) <= 10.0
