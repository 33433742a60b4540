"""The client protocol without I/O: request building, reply reading, retry decisions, the wait
schedule (driven by a simulated clock) and the SSE parser."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from neuroq.client import _core
from neuroq.client._core import ClientConfig, Failure, Poll, Request, Routes, WaitPlan
from neuroq.errors import (
    APIError,
    AuthenticationError,
    ConfigurationError,
    JobFailed,
    NotFoundError,
    RequestRejected,
    TransportError,
)
from neuroq.http_retry import MAX_RETRY_AFTER_S
from neuroq.jobs import JobStatus, Policy


def routes(**kw: object) -> Routes:
    env = {"RUNPOD_ENDPOINT_ID": "ep1", "RUNPOD_API_KEY": "secret"}
    return Routes(ClientConfig.resolve(env=env, **kw))  # type: ignore[arg-type]


# Configuration


def test_config_reads_environment_and_arguments_win() -> None:
    env = {
        "RUNPOD_ENDPOINT_ID": "from-env",
        "RUNPOD_API_KEY": "k-env",
        "NEUROQ_API_URL": "https://api.runpod.ai/v2/",
    }
    config = ClientConfig.resolve(env=env)
    assert (config.endpoint_id, config.api_key, config.base_url) == (
        "from-env",
        "k-env",
        "https://api.runpod.ai/v2",
    )
    config = ClientConfig.resolve("arg", api_key="k-arg", base_url="http://h:1/v2", env=env)
    assert (config.endpoint_id, config.api_key, config.base_url) == (
        "arg",
        "k-arg",
        "http://h:1/v2",
    )


def test_config_defaults_to_local_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .neuroq/api_key here
    config = ClientConfig.resolve("ep", env={})
    assert config.base_url == "http://127.0.0.1:8000/v2"
    assert config.api_key is None


def test_endpoint_defaults_to_the_one_serve_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: "no endpoint id" from the library where `neuroq send` just worked."""
    monkeypatch.chdir(tmp_path)
    assert ClientConfig.resolve(env={}).endpoint_id == "neuroq"


@pytest.mark.parametrize("bad", ["a/b", " padded"])
def test_endpoint_id_must_be_one_path_segment(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="path segment"):
        ClientConfig.resolve(bad, env={})


def test_base_url_gets_v2_when_bare_and_rejects_other_schemes() -> None:
    assert _core.normalize_base_url("http://127.0.0.1:8000/") == "http://127.0.0.1:8000/v2"
    assert _core.normalize_base_url("http://h/prefix/v2") == "http://h/prefix/v2"
    with pytest.raises(ConfigurationError, match="base URL"):
        _core.normalize_base_url("ftp://h/v2")
    with pytest.raises(ConfigurationError, match="base URL"):
        _core.normalize_base_url("127.0.0.1:8000")


# Requests


def test_run_request_wraps_input_and_sends_key_and_idempotency_key() -> None:
    req = routes().run({"input": 1}, webhook="https://hook", policy=Policy(ttl_ms=20_000))
    assert (req.method, req.url) == ("POST", "http://127.0.0.1:8000/v2/ep1/run")
    # Always wrapped, even when the input itself has an "input" key (unlike runpod's SDK).
    assert req.body["input"] == {"input": 1}
    assert req.body["webhook"] == "https://hook"
    assert req.body["policy"]["ttl"] == 20_000
    assert req.headers["Authorization"] == "Bearer secret"
    assert len(req.headers["Idempotency-Key"]) >= 16
    assert req.resend_safe
    other = routes().run(1)
    assert other.headers["Idempotency-Key"] != req.headers["Idempotency-Key"]
    chosen = routes().run(1, idempotency_key="order-42")
    assert chosen.headers["Idempotency-Key"] == "order-42"
    assert "policy" not in other.body and "webhook" not in other.body


def test_run_rejects_unserialisable_input_and_bad_webhook() -> None:
    with pytest.raises(Exception, match="JSON-serialisable"):
        routes().run({"x": object()})
    with pytest.raises(Exception, match="webhook"):
        routes().run(1, webhook="not-a-url")


def test_runsync_wait_is_clamped_and_extends_the_read_timeout() -> None:
    req = routes().run(1, sync_wait_ms=500)
    assert req.url.endswith("/ep1/runsync") and req.params == {"wait": "1000"}
    req = routes().run(1, sync_wait_ms=600_000)
    assert req.params == {"wait": "90000"}
    assert req.timeout_s == pytest.approx(_core.DEFAULT_REQUEST_TIMEOUT_S + 90)


def test_status_request_holds_only_when_asked() -> None:
    plain = routes().status("j1")
    assert (plain.method, plain.url, plain.params) == (
        "GET",
        "http://127.0.0.1:8000/v2/ep1/status/j1",
        {},
    )
    held = routes().status("j1", wait_ms=30_000)
    assert held.params == {"wait": "30000"}
    assert held.timeout_s == pytest.approx(plain.timeout_s + 30)


def test_write_routes_send_no_body_and_resend_rules() -> None:
    r = routes()
    cancel, retry, purge = r.cancel("j"), r.retry("j"), r.purge_queue()
    assert [x.url.rsplit("/v2/", 1)[1] for x in (cancel, retry, purge)] == [
        "ep1/cancel/j",
        "ep1/retry/j",
        "ep1/purge-queue",
    ]
    assert all(x.method == "POST" and x.body is None for x in (cancel, retry, purge))
    assert cancel.resend_safe and not retry.resend_safe and not purge.resend_safe
    assert r.health().url.endswith("/ep1/health")


def test_stream_request_sse_headers() -> None:
    sse = routes().stream("j", sse=True, last_event_id="7")
    assert sse.headers["Accept"] == "text/event-stream"
    assert sse.headers["Last-Event-ID"] == "7"
    assert routes().stream("j", wait_ms=5000).params == {"wait": "5000"}


def test_job_id_with_slash_is_refused() -> None:
    with pytest.raises(Exception, match="not a valid id"):
        routes().status("a/b")


def test_no_authorization_header_without_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no .neuroq/api_key here
    r = Routes(ClientConfig.resolve("ep", env={}))
    assert "Authorization" not in r.health().headers


# Replies


def test_read_reply_returns_json_on_200() -> None:
    assert _core.read_reply(200, {}, b'{"id": "x"}') == {"id": "x"}


@pytest.mark.parametrize(
    ("code", "error_type", "transient"),
    [
        (400, RequestRejected, False),
        (401, AuthenticationError, False),
        (404, NotFoundError, False),
        (413, RequestRejected, False),
        (405, APIError, False),
        (429, APIError, True),
        (500, APIError, True),
        (503, APIError, True),
    ],
)
def test_error_statuses_map_to_errors(code: int, error_type: type, transient: bool) -> None:
    failure = _core.read_reply(code, {}, json.dumps({"error": "why"}).encode())
    assert isinstance(failure, Failure)
    assert type(failure.error) is error_type
    assert failure.transient is transient
    assert failure.error.status_code == code  # type: ignore[attr-defined]
    assert "why" in str(failure.error)


def test_refusals_are_known_undelivered_other_5xx_are_not() -> None:
    assert not _core.failure_from_reply(429, {}, {}).maybe_delivered
    assert not _core.failure_from_reply(503, {}, {}).maybe_delivered
    assert _core.failure_from_reply(500, {}, {}).maybe_delivered


def test_non_json_bodies_are_reported_not_crashed_on() -> None:
    failure = _core.read_reply(200, {}, b"<html>")
    assert isinstance(failure, Failure) and "not JSON" in str(failure.error)
    failure = _core.read_reply(502, {}, b"Bad Gateway")
    assert isinstance(failure, Failure) and "Bad Gateway" in str(failure.error)


def test_retry_after_seconds_and_http_date() -> None:
    failure = _core.failure_from_reply(429, {"retry-after": "2"}, {})
    assert failure.retry_after_s == 2.0
    date = formatdate(time.time() + 30, usegmt=True)
    failure = _core.failure_from_reply(503, {"retry-after": date}, {})
    assert failure.retry_after_s == pytest.approx(30, abs=1.5)


def test_job_id_of_reply_without_id_is_an_api_error() -> None:
    with pytest.raises(APIError, match="no job id"):
        _core.job_id_of({"status": "IN_QUEUE"})


# Retry decisions

GET = Request("GET", "http://h/v2/e/status/j")
POST_UNSAFE = Request("POST", "http://h/v2/e/retry/j", resend_safe=False)
CONNECT = Failure(TransportError("refused"), transient=True, maybe_delivered=False)
BROKEN = Failure(TransportError("reset"), transient=True, maybe_delivered=True)


def test_backoff_doubles_then_gives_up() -> None:
    delays = [_core.retry_delay(GET, BROKEN, attempt, now=0.0) for attempt in range(6)]
    assert delays == [0.1, 0.2, 0.4, 0.8, None, None]


def test_unsafe_requests_are_resent_only_when_undelivered() -> None:
    assert _core.retry_delay(POST_UNSAFE, BROKEN, 0, now=0.0) is None
    assert _core.retry_delay(POST_UNSAFE, CONNECT, 0, now=0.0) == 0.1


def test_permanent_errors_are_not_retried() -> None:
    failure = _core.failure_from_reply(404, {}, {})
    assert _core.retry_delay(GET, failure, 0, now=0.0) is None


def test_retry_after_is_honoured_capped_and_bounded_by_deadline() -> None:
    failure = _core.failure_from_reply(429, {"retry-after": "5"}, {})
    assert _core.retry_delay(GET, failure, 0, now=0.0) == 5.0
    huge = _core.failure_from_reply(429, {"retry-after": "99999"}, {})
    assert _core.retry_delay(GET, huge, 0, now=0.0) == MAX_RETRY_AFTER_S
    assert _core.retry_delay(GET, failure, 0, now=0.0, deadline=4.0) is None
    assert _core.retry_delay(GET, BROKEN, 0, now=0.0, deadline=0.05) is None


# Job outcomes


@pytest.mark.parametrize("state", [s.value for s in JobStatus])
def test_terminal_states_are_the_servers(state: str) -> None:
    """The client reads states as the plain strings JSON gives; they must find the server's
    own TERMINAL set (one definition, in neuroq.jobs)."""
    wire = json.loads(json.dumps(state))
    assert type(wire) is str
    assert _core.is_terminal({"status": wire}) is JobStatus(state).is_terminal
    stream = _core.StreamState()
    stream.apply(_core.StreamUpdate(status=wire))
    assert stream.done is JobStatus(state).is_terminal


def test_guide_result_contract() -> None:
    assert _core.guide_result({"status": "COMPLETED", "output": {"a": 1}}) == {"output": {"a": 1}}
    assert _core.guide_result({"status": "COMPLETED"}) == {"output": {}}
    assert _core.guide_result({"status": "FAILED", "error": "boom"}) == {"error": "boom"}
    structured = _core.guide_result({"status": "FAILED", "error": {"error_type": "E"}})
    assert structured == {"error": '{"error_type": "E"}'}
    assert "cancelled" in _core.guide_result({"status": "CANCELLED"})["error"]
    assert "timed out" in _core.guide_result({"status": "TIMED_OUT"})["error"]


def test_output_or_raise() -> None:
    assert _core.output_or_raise({"status": "COMPLETED", "output": [1]}) == [1]
    with pytest.raises(JobFailed) as info:
        _core.output_or_raise({"id": "j", "status": "FAILED", "error": "boom"})
    assert (info.value.job_id, info.value.status, info.value.error) == ("j", "FAILED", "boom")


# The wait schedule


class FakeServer:
    """A simulated clock plus a server that answers status polls: `holds` says whether it honours
    ?wait=, and the job ends at `ends_at` (None: never)."""

    def __init__(self, holds: bool, ends_at: float | None, rtt_s: float = 0.01) -> None:
        self.now = 0.0
        self.holds = holds
        self.ends_at = ends_at
        self.rtt_s = rtt_s
        self.polls: list[Poll] = []

    def state(self) -> str:
        return "COMPLETED" if self.ends_at is not None and self.now >= self.ends_at else "IN_QUEUE"

    def poll(self, poll: Poll) -> str:
        self.polls.append(poll)
        self.now += poll.delay_s
        start_state = self.state()
        if self.holds and poll.wait_ms:
            hold_until = self.now + poll.wait_ms / 1000
            if self.ends_at is not None and self.now < self.ends_at < hold_until:
                hold_until = self.ends_at
            self.now = hold_until if start_state != "COMPLETED" else self.now
        self.now += self.rtt_s
        return self.state()

    def wait(self, timeout_s: float) -> tuple[str, float]:
        """Drive a WaitPlan as the real drivers do; returns (outcome, finish time)."""
        plan = WaitPlan(timeout_s, self.now, ("IN_QUEUE", "null"))
        poll: Poll | None = plan.first(self.now)
        while poll is not None:
            sent = self.now + poll.delay_s
            state = self.poll(poll)
            if state == "COMPLETED":
                return "COMPLETED", self.now
            poll = plan.next((state, "null"), sent, self.now, poll.wait_ms)
        return "TIMEOUT", self.now


def test_long_poll_server_is_held_and_answers_at_the_change() -> None:
    server = FakeServer(holds=True, ends_at=70.0)
    outcome, finished = server.wait(600)
    assert outcome == "COMPLETED"
    assert finished == pytest.approx(70.0, abs=0.05)
    # 30 s holds: 0-30, 30-60, then the change at 70. No sleeping between held polls.
    assert len(server.polls) == 3
    assert all(p.wait_ms == 30_000 and p.delay_s == 0 for p in server.polls)


def test_server_without_long_poll_falls_back_to_capped_backoff() -> None:
    server = FakeServer(holds=False, ends_at=30.0)
    outcome, finished = server.wait(600)
    assert outcome == "COMPLETED"
    # Found out on the first reply; from then on no ?wait= and delays 0.1, 0.2, ... capped at 2.
    assert server.polls[0].wait_ms == 30_000
    later = server.polls[1:]
    assert all(p.wait_ms is None for p in later)
    delays = [p.delay_s for p in later]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert max(delays) == 2.0
    assert finished - 30.0 <= 2.0 + 0.05  # seen within one capped poll of the change
    assert len(server.polls) < 30  # about 15 for a 2 s cap over 30 s: no hot loop


@pytest.mark.parametrize("holds", [True, False])
@pytest.mark.parametrize("timeout_s", [0.0, 0.35, 5.0, 61.0])
def test_timeout_is_honoured_to_within_one_poll(holds: bool, timeout_s: float) -> None:
    server = FakeServer(holds=holds, ends_at=None)
    outcome, finished = server.wait(timeout_s)
    assert outcome == "TIMEOUT"
    # Never sleeps or holds past the deadline: late by at most one round trip.
    assert timeout_s <= finished + 1e-9 or (timeout_s == 0.0 and len(server.polls) == 1)
    assert finished <= timeout_s + server.rtt_s + 1e-9
    for poll in server.polls:
        assert poll.wait_ms is None or poll.wait_ms <= max(timeout_s * 1000, 0)


def test_a_change_resets_the_backoff() -> None:
    plan = WaitPlan(None, 0.0, "a", long_poll=False)
    for _ in range(6):
        plan.next("a", 0.0, 0.01, None)
    assert plan.backoff_s == 2.0
    poll = plan.next("b", 0.0, 0.01, None)
    assert poll is not None and poll.delay_s == 0.1 and plan.backoff_s == 0.1


def test_an_unknown_start_is_treated_as_a_change() -> None:
    plan = WaitPlan(10.0, 0.0)
    poll = plan.next(("IN_PROGRESS", "null"), 0.0, 0.01, 10_000)
    # The first reply cannot say whether the server held it: ask again at once, still held.
    assert poll == Poll(0.0, 9990)
    assert plan.long_poll is None


def test_short_waits_do_not_decide_about_long_poll() -> None:
    plan = WaitPlan(0.5, 0.0, "s")
    poll = plan.next("s", 0.0, 0.01, 500)
    assert plan.long_poll is None
    assert poll is not None and poll.delay_s == 0.1


def test_negative_timeout_is_refused() -> None:
    with pytest.raises(Exception, match="timeout"):
        WaitPlan(-1.0, 0.0)


# SSE


def feed_all(parser: _core.SSEParser, text: str) -> list[_core.SSEEvent]:
    events = [parser.feed(line) for line in text.split("\n")]
    return [e for e in events if e is not None]


def test_sse_parser_joins_data_lines_skips_comments_and_tracks_ids() -> None:
    parser = _core.SSEParser()
    text = ': keepalive\n\nid: 1\ndata: {"output":\ndata:  "a"}\n\nevent: status\ndata: {}\n\n'
    events = feed_all(parser, text)
    assert events == [
        _core.SSEEvent("message", '{"output":\n "a"}', "1"),
        _core.SSEEvent("status", "{}", "1"),
    ]
    assert parser.last_id == "1"


def test_sse_parser_reset_drops_half_events_keeps_last_id() -> None:
    parser = _core.SSEParser()
    feed_all(parser, "id: 4\ndata: 1\n\ndata: half")
    parser.reset()
    assert parser.feed("") is None
    assert parser.last_id == "4"


def test_sse_updates() -> None:
    chunk = _core.sse_update(_core.SSEEvent("message", '{"output": {"i": 0}}', "1"))
    assert chunk.chunks == [{"i": 0}] and chunk.status is None
    status = _core.sse_update(_core.SSEEvent("status", '{"id": "j", "status": "COMPLETED"}'))
    assert status.chunks == [] and status.status == "COMPLETED"
    with pytest.raises(NotFoundError, match="no longer exists"):
        _core.sse_update(_core.SSEEvent("error", '{"error": "job j no longer exists"}'))


def test_stream_state_ends_only_after_an_empty_terminal_reply() -> None:
    state = _core.StreamState()
    state.apply(_core.stream_reply_update({"status": "IN_PROGRESS", "stream": [{"output": 1}]}))
    assert not state.done
    state.apply(_core.stream_reply_update({"status": "COMPLETED", "stream": [{"output": 2}]}))
    assert not state.done and state.received == 2
    state.apply(_core.stream_reply_update({"status": "COMPLETED", "stream": []}))
    assert state.done


def test_stream_reply_must_have_a_list() -> None:
    with pytest.raises(APIError, match="unexpected /stream reply"):
        _core.stream_reply_update({"status": "COMPLETED", "stream": "oops"})


def test_sse_refusal_keeps_the_json_poll_chunks() -> None:
    body = json.dumps({"status": "IN_PROGRESS", "stream": [{"output": "x"}]}).encode()
    assert _core.sse_refused(200, {}, body).chunks == ["x"]
    assert _core.sse_refused(406, {}, b"{}").chunks == []
    with pytest.raises(NotFoundError):
        _core.sse_refused(404, {}, b'{"error": "gone"}')


def test_a_display_takes_its_first_look_unheld() -> None:
    """A held first poll would wait for the change after the one made since the last status:
    `neuroq send` showed each progress step one step late."""
    plan = WaitPlan(60.0, 0.0, ("IN_QUEUE", "null"))
    assert plan.first(0.0) == Poll(0.0, 30_000)
    assert plan.first(0.0, look=True) == Poll(0.0, None)
    after = plan.next(("IN_PROGRESS", '{"step": 1}'), 0.0, 0.01, None)
    assert after == Poll(0.0, 30_000)  # from then on, held again


def test_a_hold_that_runs_out_after_the_job_started_polls_on_held() -> None:
    """Our server does not end a hold when the job starts: a poll sent while IN_QUEUE can run
    its full hold and come back IN_PROGRESS. That is a change, not a sign of a server that
    does not hold, so the next poll is held again at once."""
    plan = WaitPlan(600.0, 0.0, ("IN_QUEUE", "null"))
    poll = plan.next(("IN_PROGRESS", "null"), 0.0, 30.0, 30_000)
    assert poll == Poll(0.0, 30_000)
    assert plan.long_poll is not False
