"""The scaler's decision (neuroq.scaler.decide) on a simulated clock: scale from zero, the two
rules, workersMax under a flood, the idle timeout per worker, workersMin kept warm, busy workers
never stopped, crashed workers replaced, a lowered workersMax, workersSpare idle workers kept
beyond the busy ones. No processes, no real time."""

from __future__ import annotations

import pytest

from neuroq.endpoints import EndpointConfig, EndpointError, ScalerType, desired_workers
from neuroq.scaler.decide import Decision, WorkerView, decide
from neuroq.store.base import QueueStats

T0 = 1_000_000_000


def cfg(**changes: object) -> EndpointConfig:
    base = {"handler": "m:f", "workersMin": 0, "workersMax": 4, "idleTimeout": 5}
    return EndpointConfig("ep").updated({**base, **changes})


def idle(worker_id: str, since_ms: int = T0) -> WorkerView:
    return WorkerView(worker_id, ready=True, busy=False, idle_since_ms=since_ms)


def busy(worker_id: str) -> WorkerView:
    return WorkerView(worker_id, ready=True, busy=True, idle_since_ms=T0)


def starting(worker_id: str) -> WorkerView:
    return WorkerView(worker_id, ready=False, busy=False, idle_since_ms=T0)


def queued(n: int, waited_s: float = 0.0, running: int = 0) -> QueueStats:
    return QueueStats(n, running, T0 - int(waited_s * 1000) if n else None)


def test_nothing_to_do_at_zero() -> None:
    assert decide(cfg(), QueueStats(), [], T0) == Decision(0, 0)


def test_first_job_starts_one_worker_at_once_whatever_the_delay() -> None:
    assert decide(cfg(), queued(1), [], T0) == Decision(1, 1)


def test_endpoint_without_handler_or_command_starts_nothing() -> None:
    plain = EndpointConfig("ep", workers_min=2)
    assert decide(plain, queued(10, 60), [], T0).start == 0


def test_queue_delay_adds_one_worker_per_delay_once_the_last_one_started() -> None:
    rule = cfg(scalerType="QUEUE_DELAY", scalerValue=2)
    assert decide(rule, queued(5, waited_s=1), [busy("a")], T0).start == 0
    assert decide(rule, queued(5, waited_s=3), [busy("a")], T0) == Decision(2, 1)
    # the added worker is still starting: no second one yet
    assert decide(rule, queued(5, waited_s=4), [busy("a"), starting("b")], T0).start == 0
    assert decide(rule, queued(5, waited_s=4), [busy("a"), busy("b")], T0) == Decision(3, 1)


def test_request_count_runs_one_worker_per_scaler_value_jobs() -> None:
    rule = cfg(scalerType="REQUEST_COUNT", scalerValue=3)
    assert decide(rule, queued(7), [], T0) == Decision(3, 3)
    assert decide(rule, queued(2, running=2), [busy("a")], T0) == Decision(2, 1)


def test_workers_max_holds_under_a_flood() -> None:
    for rule in (cfg(scalerType="REQUEST_COUNT", scalerValue=1), cfg(scalerValue=1)):
        fleet = [busy(str(i)) for i in range(4)]
        assert decide(rule, queued(10_000, waited_s=600), fleet, T0).start == 0
        assert decide(rule, queued(10_000, waited_s=600), [], T0).start <= 4


def test_idle_worker_stops_after_the_idle_timeout_and_not_before() -> None:
    fleet = [idle("a", since_ms=T0)]
    assert decide(cfg(idleTimeout=5), QueueStats(), fleet, T0 + 4_999).stop == ()
    assert decide(cfg(idleTimeout=5), QueueStats(), fleet, T0 + 5_000) == Decision(0, 0, ("a",))


def test_busy_and_starting_workers_are_never_stopped_for_idleness() -> None:
    fleet = [busy("a"), starting("b")]
    assert decide(cfg(idleTimeout=0), QueueStats(running=1), fleet, T0 + 60_000).stop == ()


def test_workers_min_stays_warm() -> None:
    fleet = [idle("a"), idle("b", since_ms=T0 + 1)]
    later = T0 + 3_600_000
    assert decide(cfg(workersMin=1), QueueStats(), fleet, later) == Decision(1, 0, ("a",))
    assert decide(cfg(workersMin=2), QueueStats(), [], T0) == Decision(2, 2)


def test_idle_workers_are_kept_while_jobs_wait() -> None:
    fleet = [idle("a"), busy("b")]
    assert decide(cfg(), queued(3, waited_s=1), fleet, T0 + 60_000).stop == ()


def test_request_count_stops_idle_workers_beyond_the_quotient() -> None:
    rule = cfg(scalerType="REQUEST_COUNT", scalerValue=2)
    fleet = [busy("a"), idle("b"), idle("c", since_ms=T0 + 1)]
    assert decide(rule, QueueStats(running=2), fleet, T0 + 10_000).stop == ("b", "c")
    assert decide(rule, QueueStats(running=3), fleet, T0 + 10_000).stop == ("b",)


def test_a_crashed_worker_is_replaced() -> None:
    # one of two busy workers died: the rule still wants two
    assert decide(cfg(), QueueStats(running=1), [busy("a")], T0, lost=1) == Decision(2, 1)
    assert decide(cfg(workersMin=1), QueueStats(), [], T0, lost=1) == Decision(1, 1)


def test_lowering_workers_max_stops_the_excess_idle_first() -> None:
    fleet = [busy("a"), idle("b", since_ms=T0 + 5), busy("c")]
    decision = decide(cfg(workersMax=1, idleTimeout=600), QueueStats(running=2), fleet, T0 + 10)
    assert decision.stop[0] == "b" and len(decision.stop) == 2 and decision.desired == 1


def test_scaler_types_are_the_two_runpod_rules() -> None:
    assert {t.value for t in ScalerType} == {"QUEUE_DELAY", "REQUEST_COUNT"}


def test_a_spare_is_started_while_nothing_is_queued() -> None:
    assert decide(cfg(workersSpare=1), QueueStats(), [], T0) == Decision(1, 1)
    assert decide(cfg(workersSpare=2), QueueStats(), [], T0) == Decision(2, 2)
    # the spare on its way is enough: nothing more while it starts
    assert decide(cfg(workersSpare=1), QueueStats(), [starting("a")], T0) == Decision(1, 0)


def test_a_busy_spare_is_replaced_by_another_idle_one() -> None:
    for rule in (cfg(workersSpare=1), cfg(workersSpare=1, scalerType="REQUEST_COUNT")):
        assert decide(rule, QueueStats(running=1), [busy("a")], T0) == Decision(2, 1)
        fleet = [busy("a"), idle("b")]
        assert decide(rule, QueueStats(running=1), fleet, T0 + 600_000) == Decision(2, 0)


def test_the_spare_is_never_stopped_for_idleness_and_the_rest_are() -> None:
    fleet = [idle("a"), idle("b", since_ms=T0 + 1), idle("c", since_ms=T0 + 2)]
    later = T0 + 60_000
    assert decide(cfg(workersSpare=1), QueueStats(), fleet, later) == Decision(1, 0, ("a", "b"))
    assert decide(cfg(workersSpare=1), QueueStats(), [idle("c")], later).stop == ()


def test_spares_stay_within_workers_max() -> None:
    full = [busy(str(i)) for i in range(4)]
    assert decide(cfg(workersSpare=2), QueueStats(running=4), full, T0).start == 0
    three = full[:3]
    assert decide(cfg(workersSpare=2), QueueStats(running=3), three, T0) == Decision(4, 1)


def test_a_worker_starting_for_the_queue_does_not_hold_back_the_spares() -> None:
    # QUEUE_DELAY adds one worker at a time; the spares are not part of that rule
    rule = cfg(workersSpare=2, scalerValue=1)
    fleet = [busy("a"), busy("b"), starting("c")]
    assert decide(rule, queued(1, waited_s=5), fleet, T0) == Decision(4, 1)
    assert decide(cfg(scalerValue=1), queued(1, waited_s=5), fleet, T0).start == 0


def test_without_a_handler_a_spare_starts_nothing_but_keda_sees_it() -> None:
    plain = EndpointConfig("ep", workers_spare=1)
    assert decide(plain, QueueStats(), [], T0).start == 0
    wanted = desired_workers(
        plain, queued=0, running=1, oldest_wait_s=0, current=1, busy=1, external=True
    )
    assert wanted == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workersSpare": -1}, "workersSpare: must be an integer from 0 to 256, got -1"),
        ({"workersSpare": True}, "workersSpare: must be an integer from 0 to 256, got True"),
        ({"workersSpare": 5}, "workersSpare: 5 is more than workersMax 4"),
    ],
)
def test_bad_spares_are_refused_by_name(changes: dict[str, object], message: str) -> None:
    with pytest.raises(EndpointError, match=r"^workersSpare: ") as caught:
        cfg(**changes)
    assert str(caught.value) == message and caught.value.field == "workersSpare"
