"""The sampled history behind the overview's depth plot and rates, on a hand-made clock."""

from __future__ import annotations

import pytest

from neuroq.api.dashboard.history import PLOT_WINDOW_MS, History
from neuroq.api.metrics import Metrics

T0 = 1_700_000_000_000


def test_depth_series() -> None:
    history = History(interval_s=10)
    metrics = Metrics()
    history.record(T0, {"a": {"IN_QUEUE": 3, "IN_PROGRESS": 1}, "b": {"IN_QUEUE": 2}}, metrics)
    metrics.finished[("a", "COMPLETED")] = 6
    history.record(T0 + 60_000, {"a": {"IN_QUEUE": 1}}, metrics)
    now = T0 + 60_500
    assert history.depth({}, now) == [(T0, 5.0), (T0 + 60_000, 1.0), (now, 0.0)]
    assert history.samples[0].running == 1


def test_rate_per_min_uses_the_rate_window() -> None:
    history = History(interval_s=60)
    metrics = Metrics()
    assert history.rate_per_min(metrics, "a", "COMPLETED", T0) == 0.0
    for minute in range(10):
        metrics.finished[("a", "COMPLETED")] = 4 * minute
        history.record(T0 + minute * 60_000, {}, metrics)
    # The window reaches back five minutes: 20 jobs over those minutes.
    now = T0 + 9 * 60_000
    assert history.rate_per_min(metrics, "a", "COMPLETED", now) == pytest.approx(4.0)
    assert history.rate_per_min(metrics, "b", "COMPLETED", now) == 0.0


def test_samples_are_bounded_by_the_plot_window() -> None:
    history = History(interval_s=60)
    for minute in range(200):
        history.record(T0 + minute * 60_000, {}, Metrics())
    assert len(history.samples) == PLOT_WINDOW_MS // 60_000 + 2
