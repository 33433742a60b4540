"""Sampling: request parameters, the logit filters and a batched, per-row-seeded sampler.

The order is fixed (docs/model-engine.md, Sampling): repetition penalty -> temperature (sine
schedule) -> top-k -> top-p -> draw. The filters below work on a (B, V) batch of logits with one
parameter per row; they are the readable reference. `Sampler`, which generation uses, applies
the same rules with shortcuts the tests hold to those filters: the penalty on the seen ids only,
and everything after one `topk` call on the few candidates left. Each row owns a random stream,
so a request draws the same tokens whether it runs alone or in a batch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from neuroq.model.tokenizer import SPECIAL_IDS

# The original silently clamped these; ours rejects larger values with a ValueError instead.
MAX_LENGTH_CAP = 150
TOP_K_CAP = 50
# Generous bounds that still catch typos (a temperature of 700 or a penalty of 1e9).
TEMPERATURE_CAP = 10.0
REPETITION_PENALTY_CAP = 10.0
# The penalty looks at the last 100 generated tokens, as the original did (its window also held
# the prompt; ours does not).
PENALTY_WINDOW = 100
# Period of the temperature schedule: T oscillates with sin(0.3 * step), about 21 steps.
TEMPERATURE_FREQUENCY = 0.3


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples. Defaults are the original handler's `generate` defaults.

    `temperature` T sets the schedule range to (0.8 T, 1.2 T) unless `temp_min`/`temp_max` are
    given (both or neither). `top_k=0` and `top_p=1.0` disable those filters and
    `repetition_penalty=1.0` disables the penalty. `seed=None` draws a fresh random seed, so two
    calls differ; any integer makes the request reproducible, alone or inside a batch.
    `stop_at_eos=False` ignores EOS and `<USER>` and always yields `max_length` tokens (benchmarks).
    """

    max_length: int = 100
    temperature: float = 0.7
    temp_min: float | None = None
    temp_max: float | None = None
    top_k: int = 40
    top_p: float = 0.9
    repetition_penalty: float = 2.0
    seed: int | None = None
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        _check_int("max_length", self.max_length, 1, MAX_LENGTH_CAP)
        _check_float("temperature", self.temperature, TEMPERATURE_CAP)
        if (self.temp_min is None) != (self.temp_max is None):
            missing = "temp_max" if self.temp_max is None else "temp_min"
            raise ValueError(f"{missing}: temp_min and temp_max must be given together")
        if self.temp_min is not None and self.temp_max is not None:
            _check_float("temp_min", self.temp_min, TEMPERATURE_CAP)
            _check_float("temp_max", self.temp_max, TEMPERATURE_CAP)
            if self.temp_min > self.temp_max:
                raise ValueError(
                    f"temp_min: must be <= temp_max, got {self.temp_min} > {self.temp_max}"
                )
        _check_int("top_k", self.top_k, 0, TOP_K_CAP)
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: must be a number in (0, 1], got {self.top_p!r}")
        penalty = self.repetition_penalty
        if not _is_number(penalty) or not 1.0 <= penalty <= REPETITION_PENALTY_CAP:
            raise ValueError(
                f"repetition_penalty: must be a number in [1, {REPETITION_PENALTY_CAP}], "
                f"got {penalty!r}"
            )
        if self.seed is not None and (
            not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0
        ):
            raise ValueError(f"seed: must be a non-negative integer or None, got {self.seed!r}")
        if not isinstance(self.stop_at_eos, bool):
            raise ValueError(f"stop_at_eos: must be a boolean, got {self.stop_at_eos!r}")

    @property
    def temperature_range(self) -> tuple[float, float]:
        """(temp_min, temp_max), derived from `temperature` when not given explicitly."""
        if self.temp_min is not None and self.temp_max is not None:
            return float(self.temp_min), float(self.temp_max)
        return 0.8 * self.temperature, 1.2 * self.temperature

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingParams:
        """Build from a JSON-like dict; unknown keys are an error, not silently dropped."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown sampling parameter (allowed: {sorted(known)})")
        return cls(**data)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name}: must be an integer in [{low}, {high}], got {value!r}")


def _check_float(name: str, value: object, high: float) -> None:
    if not _is_number(value) or not 0.0 < value <= high:  # type: ignore[operator]
        raise ValueError(f"{name}: must be a number in (0, {high}], got {value!r}")


def temperature_at(step: int, temp_min: float, temp_max: float) -> float:
    """The original's temperature schedule: starts at the midpoint, period about 21 steps."""
    return temp_min + (temp_max - temp_min) * (0.5 + 0.5 * math.sin(TEMPERATURE_FREQUENCY * step))


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor | float
) -> torch.Tensor:
    """The CTRL rule on the ids marked in `seen` (B, V bool): positive logits are divided by the
    penalty and negative ones multiplied, so a seen token always becomes less likely (the original
    divided both, which boosted negative logits)."""
    if not isinstance(penalty, torch.Tensor):
        penalty = torch.tensor(penalty, dtype=logits.dtype, device=logits.device)
    return torch.where(seen, penalised(logits, penalty), logits)


def penalised(logits: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """The CTRL rule itself, on every element: positive ÷ penalty, negative × penalty."""
    return torch.where(logits > 0, logits / penalty, logits * penalty)


def top_k_filter(logits: torch.Tensor, k: torch.Tensor | int) -> torch.Tensor:
    """Keep the logits >= the row's k-th largest (ties at the boundary survive); k = 0 keeps all."""
    vocab = logits.size(-1)
    if isinstance(k, int):
        k = torch.full((logits.size(0),), k, dtype=torch.long, device=logits.device)
    k = k.clamp(max=vocab)
    k_max = int(k.max())
    if k_max == 0:
        return logits
    top = torch.topk(logits, k_max, dim=-1).values  # (B, k_max), sorted descending
    threshold = top.gather(-1, (k - 1).clamp(min=0).unsqueeze(-1))  # (B, 1)
    threshold = torch.where(k.unsqueeze(-1) > 0, threshold, torch.full_like(threshold, -math.inf))
    return logits.masked_fill(logits < threshold, -math.inf)


def top_p_filter(logits: torch.Tensor, p: torch.Tensor | float) -> torch.Tensor:
    """Nucleus filter: keep the most likely ids until their probability mass exceeds p (the id that
    crosses p is kept, the top id always is); p = 1 keeps all."""
    if not isinstance(p, torch.Tensor):
        p = torch.full((logits.size(0),), float(p), dtype=logits.dtype, device=logits.device)
    if bool((p >= 1.0).all()):
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    remove = cumulative > p.unsqueeze(-1)
    # Shift right by one: an id is removed only if the mass *before* it already exceeds p.
    remove = torch.cat([torch.zeros_like(remove[:, :1]), remove[:, :-1]], dim=-1)
    remove &= (p < 1.0).unsqueeze(-1)
    remove_unsorted = torch.zeros_like(remove).scatter(-1, order, remove)
    return logits.masked_fill(remove_unsorted, -math.inf)


class Sampler:
    """Per-row sampling state for a batch of requests: step counters, the penalty window and one
    random stream per row. Rows are addressed by their index in `params`, so rows that finish can
    drop out of later calls without disturbing the others.

    The draw runs on the CPU whatever device made the logits: after one `topk` call a row has at
    most top_k candidates, and on arrays that small NumPy's operations cost about a microsecond
    where a tensor operation costs several, which matters when a decode step takes two
    milliseconds. A `seed=None` request seeds its stream from the OS.
    """

    def __init__(self, params: Sequence[SamplingParams]) -> None:
        self.params = list(params)
        n = len(self.params)
        self.ranges = [p.temperature_range for p in self.params]
        self.use_penalty = any(p.repetition_penalty > 1.0 for p in self.params)
        # Per row: how often each id occurs among its last PENALTY_WINDOW generated tokens (a
        # few dozen ids, so the penalty touches those instead of the whole vocabulary).
        self.counts: list[Counter[int]] = [Counter() for _ in range(n)]
        self.history: list[list[int]] = [[] for _ in range(n)]
        self.steps = [0] * n
        self.rngs = [np.random.default_rng(p.seed) for p in self.params]

    def sample(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Draw one token for each of `rows` from `logits` (len(rows), V) and record it."""
        scores = logits.detach().float().cpu().numpy()
        if self.use_penalty:
            scores = self._penalise(scores, rows)
        temps = [temperature_at(self.steps[r], *self.ranges[r]) for r in rows]
        scores = scores / np.array(temps, dtype=np.float32)[:, None]
        weights, ids = self._candidates(scores, rows)
        # Inverse-CDF draw with each row's own uniform number over its unnormalised weights.
        u = np.array([self.rngs[r].random() for r in rows])
        cdf = weights.cumsum(axis=-1)
        pick = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=-1), cdf.shape[-1] - 1)
        tokens = ids[np.arange(len(rows)), pick].tolist()
        self._record(rows, tokens)
        return tokens

    def _penalise(self, scores: np.ndarray, rows: Sequence[int]) -> np.ndarray:
        """`apply_repetition_penalty` on just the ids each row has seen (the same arithmetic)."""
        at: list[int] = []  # flat indices row * V + id
        penalty: list[float] = []
        vocab = scores.shape[-1]
        for i, r in enumerate(rows):
            p = self.params[r].repetition_penalty
            if p > 1.0 and self.counts[r]:
                at += [i * vocab + t for t in self.counts[r]]
                penalty += [p] * len(self.counts[r])
        if not at:
            return scores
        out = scores.copy()
        flat = out.reshape(-1)
        seen = flat[at]
        p_arr = np.array(penalty, dtype=np.float32)
        flat[at] = np.where(seen > 0, seen / p_arr, seen * p_arr)  # the rule of `penalised`
        return out

    def _candidates(self, scores: np.ndarray, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Each row's sampling weights after top-k and top-p (B, K), in descending order of the
        scores, and their ids: exp(score - max) on the kept ids, 0 on the filtered ones.

        Only the K = max k best ids of any row can survive top-k, so everything after the one
        `topk` call runs on (B, K) arrays. Weights are summed with sequential cumulative sums, so
        a row's draw does not depend on K, i.e. on which other rows share its batch.
        """
        vocab = scores.shape[-1]
        ks = [self.params[r].top_k or vocab for r in rows]
        k_max = min(max(ks), vocab)
        # One extra id shows whether a row's boundary value has ties beyond the k_max fetched.
        fetch = min(k_max + 1, vocab)
        values_t, ids_t = torch.topk(torch.from_numpy(scores), fetch, dim=-1)
        values, ids = values_t.numpy(), ids_t.numpy()
        boundary = values[np.arange(len(rows)), np.minimum(ks, k_max) - 1][:, None]
        if fetch > k_max and (values[:, k_max : k_max + 1] == boundary).any():
            # top-k keeps every id tied with the k-th largest: widen to the widest row's count.
            widest = int((scores >= boundary).sum(axis=-1).max())
            values_t, ids_t = torch.topk(torch.from_numpy(scores), widest, dim=-1)
            values, ids = values_t.numpy(), ids_t.numpy()
        else:
            values, ids = values[:, :k_max], ids[:, :k_max]
        weights = np.exp(values.astype(np.float64) - values[:, :1])
        weights[values < boundary] = 0.0
        top_p = np.array([self.params[r].top_p for r in rows])[:, None]
        if (top_p < 1.0).any():
            # Nucleus: an id is dropped when the mass before it already exceeds p.
            cdf = weights.cumsum(axis=-1)
            weights[:, 1:][cdf[:, :-1] > top_p * cdf[:, -1:]] = 0.0
        return weights, ids

    def _record(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        for r, t in zip(rows, tokens, strict=True):
            self.steps[r] += 1
            if t in SPECIAL_IDS:  # markers and stops are not "repetitions" of content
                continue
            history, counts = self.history[r], self.counts[r]
            history.append(t)
            counts[t] += 1
            if len(history) > PENALTY_WINDOW:
                old = history.pop(0)
                counts[old] -= 1
                if not counts[old]:
                    del counts[old]
