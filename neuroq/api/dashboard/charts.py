"""The overview's plots as inline SVG: a time axis over the last hour, a value axis with round
ticks, and bars or lines. No script and no inline style (the page's policy forbids both), so the
colours come from classes in dashboard.css.

Only numbers and the labels passed in reach the markup, and every label is escaped here: render
hands this module endpoint ids, titles and units, nothing else from a job.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

#: the SVG's own coordinates; it is scaled to the width of its box, so a phone shows it at
#: about the size drawn and a desktop a little larger, with text still readable
WIDTH, HEIGHT = 400, 190
#: room for the value labels on the left and the time labels below
LEFT, RIGHT, TOP, BOTTOM = 46, 8, 10, 22
TIME_TICKS = 4


def _h(value: object) -> str:
    return html.escape(str(value), quote=True)


@dataclass(frozen=True)
class Series:
    """One line (or one layer of stacked bars): points (at_ms, value), drawn with `css` class."""

    label: str
    css: str
    points: list[tuple[int, float]]


def nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (1 for nothing)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return float(step * power)
    return 10.0 * power


@dataclass(frozen=True)
class Frame:
    """Maps (at_ms, value) to SVG coordinates for a window ending at `end_ms`."""

    start_ms: int
    end_ms: int
    top: float

    def x(self, at_ms: float) -> float:
        share = (at_ms - self.start_ms) / max(1, self.end_ms - self.start_ms)
        return LEFT + min(1.0, max(0.0, share)) * (WIDTH - LEFT - RIGHT)

    def y(self, value: float) -> float:
        return TOP + (1 - min(value, self.top) / self.top) * (HEIGHT - TOP - BOTTOM)


def _axes(frame: Frame, fmt: Callable[[float], str]) -> str:
    parts = []
    for i in range(3):  # 0, half and the top, with grid lines
        value = frame.top * i / 2
        y = frame.y(value)
        css = "axis" if i == 0 else "grid"
        parts.append(f'<line class="{css}" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}"')
        parts.append(f' y2="{y:.1f}"/><text x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end">')
        parts.append(f"{_h(fmt(value))}</text>")
    for i in range(TIME_TICKS + 1):
        at = frame.start_ms + (frame.end_ms - frame.start_ms) * i / TIME_TICKS
        x = frame.x(at)
        label = datetime.fromtimestamp(at / 1000, UTC).strftime("%H:%M")
        anchor = "start" if i == 0 else "end" if i == TIME_TICKS else "middle"
        parts.append(f'<line class="tick" x1="{x:.1f}" y1="{HEIGHT - BOTTOM}" x2="{x:.1f}"')
        parts.append(f' y2="{HEIGHT - BOTTOM + 4}"/><text x="{x:.1f}" y="{HEIGHT - 6}"')
        parts.append(f' text-anchor="{anchor}">{label}</text>')
    return "".join(parts)


def _legend(series: list[Series]) -> str:
    items = "".join(
        f'<li><span class="swatch {_h(s.css)}"></span>{_h(s.label)}</li>' for s in series
    )
    return f'<ul class="legend">{items}</ul>'


def _figure(title: str, note: str, svg_body: str, series: list[Series]) -> str:
    return (
        f'<figure class="plot"><figcaption>{_h(title)} <span class="muted">{_h(note)}</span>'
        f'</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{_h(title)} over the last hour">{svg_body}</svg>{_legend(series)}</figure>'
    )


def _time(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%H:%M UTC")


def bar_chart(
    title: str,
    series: list[Series],
    *,
    start_ms: int,
    end_ms: int,
    bucket_ms: int,
    fmt: Callable[[float], str],
) -> str:
    """Stacked bars, one per bucket: each series adds its value on top of the ones before."""
    totals: dict[int, float] = {}
    for s in series:
        for at, value in s.points:
            totals[at] = totals.get(at, 0.0) + value
    frame = Frame(start_ms, end_ms, nice_top(max(totals.values(), default=0.0)))
    width = max(1.0, frame.x(start_ms + bucket_ms) - frame.x(start_ms) - 1)
    base: dict[int, float] = {}
    bars = []
    for s in series:
        for at, value in s.points:
            if value <= 0 or at < start_ms:
                continue
            low = base.get(at, 0.0)
            base[at] = low + value
            y_top, y_low = frame.y(low + value), frame.y(low)
            bars.append(
                f'<rect class="{_h(s.css)}" x="{frame.x(at):.1f}" y="{y_top:.1f}"'
                f' width="{width:.1f}" height="{max(0.5, y_low - y_top):.1f}">'
                f"<title>{_time(at)}: {_h(fmt(value))} {_h(s.label)}</title></rect>"
            )
    note = "none in the last hour" if not totals else f"peak {fmt(max(totals.values()))}"
    return _figure(title, note, _axes(frame, fmt) + "".join(bars), series)


def line_chart(
    title: str,
    series: list[Series],
    *,
    start_ms: int,
    end_ms: int,
    fmt: Callable[[float], str],
) -> str:
    """One line per series, with a dot (and a tooltip) at each point."""
    values = [v for s in series for at, v in s.points if at >= start_ms]
    frame = Frame(start_ms, end_ms, nice_top(max(values, default=0.0)))
    marks = []
    for s in series:
        shown = [(at, v) for at, v in s.points if at >= start_ms]
        if len(shown) >= 2:
            points = " ".join(f"{frame.x(at):.1f},{frame.y(v):.1f}" for at, v in shown)
            marks.append(f'<polyline class="line {_h(s.css)}" points="{points}"/>')
        marks.extend(
            f'<circle class="dot {_h(s.css)}" cx="{frame.x(at):.1f}" cy="{frame.y(v):.1f}"'
            f' r="2.5"><title>{_time(at)}: {_h(s.label)} {_h(fmt(v))}</title></circle>'
            for at, v in shown
        )
    note = "none in the last hour" if not values else f"highest {fmt(max(values))}"
    return _figure(title, note, _axes(frame, fmt) + "".join(marks), series)
