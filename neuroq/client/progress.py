"""A running job's progress, read from its status object and shown on the command line.

While a job is IN_PROGRESS, the `output` of its status object is whatever its handler last passed
to `progress_update` (RunPod's convention). Handlers shape it freely, so it is read generically:
`percent` (0-100), `progress` (a fraction 0-1, or 0-100), or a count (`step` or `current`) with
its total (`total`, `total_steps` or `steps`; else `epoch` of `epochs`) drives a bar, and every
other field is shown as `key=value` text. NeuroQ's `train` action reports
{"epoch", "epochs", "step", "total_steps", "loss", "tokens_per_s", ...}.

On a terminal the display is one live line drawn by tqdm (a bar once a total is known); anywhere
else it prints a plain line when the state changes, and at most one a second as progress moves,
so logs stay readable.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

#: (count, total) field pairs, in the order they are looked for
_COUNTS = (
    ("step", "total"),
    ("step", "total_steps"),
    ("step", "steps"),
    ("current", "total"),
    ("epoch", "epochs"),
)
#: plain-line progress reports are at most this frequent (state changes always print)
PLAIN_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Progress:
    """What a progress report says: `done` of `total` (both None when it gives no amount),
    whether they are a percentage, and the rest as text."""

    done: float | None = None
    total: float | None = None
    percent: bool = False
    text: str = ""

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return max(0.0, min(1.0, self.done / self.total))


def _number(value: Any) -> float | None:
    # bool is an int subclass, and True is not a step count
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def read_progress(output: Any) -> Progress | None:
    """The progress in a running job's `output`; None when there is none."""
    if output is None:
        return None
    if not isinstance(output, dict):
        return Progress(text=_show(output))
    used: set[str] = set()
    done = total = None
    percent = False
    if (value := _number(output.get("percent"))) is not None:
        done, total, percent, used = value, 100.0, True, {"percent"}
    elif (value := _number(output.get("progress"))) is not None:
        done = value * 100 if 0 <= value <= 1 else value
        total, percent, used = 100.0, True, {"progress"}
    else:
        for count, of in _COUNTS:
            n, t = _number(output.get(count)), _number(output.get(of))
            if n is not None and t:
                done, total, used = n, t, {count, of}
                break
    text = " ".join(f"{k}={_show(v)}" for k, v in output.items() if k not in used)
    return Progress(done, total, percent, text)


def describe(progress: Progress) -> str:
    """One line of text for a progress report: `step 3/10 (30%) loss=2.1`."""
    parts = []
    if progress.fraction is not None and progress.done is not None:
        if progress.percent:
            parts.append(f"{progress.done:.0f}%")
        else:
            parts.append(f"{progress.done:g}/{progress.total:g} ({progress.fraction:.0%})")
    if progress.text:
        parts.append(progress.text)
    return " ".join(parts)


class JobDisplay:
    """Shows a job's state, elapsed time and progress while the CLI waits for it on `stream`
    (stderr): a live tqdm line on a terminal, plain lines otherwise."""

    def __init__(self, job_id: str, started: float, stream: TextIO, tty: bool) -> None:
        self.job_id = job_id
        self.started = started
        self.stream = stream
        self.tty = tty
        self.last_state: str | None = None
        self.last_detail = ""
        self.last_plain_at = 0.0
        self._bar: tqdm[Any] | None = None

    def update(self, status: dict[str, Any]) -> None:
        """Take a status object (an `on_status` callback of `Job.wait`)."""
        state = str(status.get("status", "?"))
        progress = read_progress(status.get("output")) if state == "IN_PROGRESS" else None
        now = time.monotonic()
        if self.tty:
            self._draw(state, progress, now - self.started)
        else:
            self._print(state, progress, now)
        self.last_state = state

    def _draw(self, state: str, progress: Progress | None, elapsed_s: float) -> None:
        bar = self._bar
        if bar is None:
            # Only ever refreshed by hand: no monitor thread, no rate limit of its own.
            bar = self._bar = tqdm(
                file=self.stream, mininterval=0, miniters=0, dynamic_ncols=True, leave=True
            )
        bar.desc = f"{state:<11} {elapsed_s:6.1f} s"
        fraction = progress.fraction if progress is not None else None
        if progress is None or fraction is None:
            bar.total = None
            bar.bar_format = "{desc}{postfix}"
            text = progress.text if progress is not None else f"job {self.job_id}"
        else:
            bar.total = 1000
            bar.n = round(fraction * 1000)
            bar.bar_format = "{desc} {percentage:3.0f}%|{bar}|{postfix}"
            amount = "" if progress.percent else f" {progress.done:g}/{progress.total:g}"
            text = (amount + " " + progress.text).strip()
        bar.postfix = " " + text if text else ""
        bar.refresh()

    def _print(self, state: str, progress: Progress | None, now: float) -> None:
        detail = describe(progress) if progress is not None else ""
        line = f"job {self.job_id}: {state} after {now - self.started:.1f} s"
        if detail:
            line += f": {detail}"
        moved = bool(detail) and detail != self.last_detail
        if state != self.last_state or (moved and now - self.last_plain_at >= PLAIN_INTERVAL_S):
            self.stream.write(line + "\n")
            self.stream.flush()
            self.last_plain_at = now
            self.last_detail = detail

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
