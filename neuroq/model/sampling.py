"""Sampling: request parameters, the logit filters and a batched, per-row-seeded sampler.

The order is fixed by the spec: repetition penalty -> temperature (sine schedule) -> top-k ->
top-p -> draw. Every filter works on a (B, V) batch of logits with one parameter per row, so one
step of a batch of requests costs a handful of tensor ops, not a Python loop over the vocabulary.
Each row owns a `torch.Generator`, so a request draws the same tokens whether it runs alone or in a
batch.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

# Special token ids shared by the tokenizer, the training data and generation.
PAD_ID, UNK_ID, BOS_ID, EOS_ID, USER_ID, ASSISTANT_ID = 0, 1, 2, 3, 4, 5
SPECIAL_IDS = frozenset({PAD_ID, UNK_ID, BOS_ID, EOS_ID, USER_ID, ASSISTANT_ID})

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


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private random stream for one request; `None` seeds it from the OS."""
    generator = torch.Generator(device=device)
    generator.manual_seed(secrets.randbits(63) if seed is None else seed)
    return generator


class Sampler:
    """Per-row sampling state for a batch of requests: step counters, the penalty window and one
    generator per row. Rows are addressed by their index in `params`, so rows that finish can drop
    out of later calls without disturbing the others."""

    def __init__(self, params: Sequence[SamplingParams], device: torch.device | str) -> None:
        self.params = list(params)
        self.device = torch.device(device)
        n = len(self.params)
        self.ranges = [p.temperature_range for p in self.params]
        self.use_penalty = any(p.repetition_penalty > 1.0 for p in self.params)
        # Per row: how often each id occurs among its last PENALTY_WINDOW generated tokens (a
        # few dozen ids, so the penalty touches those instead of the whole vocabulary).
        self.counts: list[Counter[int]] = [Counter() for _ in range(n)]
        self.history: list[list[int]] = [[] for _ in range(n)]
        self.steps = [0] * n
        self.generators = [make_generator(p.seed, self.device) for p in self.params]

    def sample(self, logits: torch.Tensor, rows: Sequence[int]) -> list[int]:
        """Draw one token for each of `rows` from `logits` (len(rows), V) and record it."""
        logits = logits.float()
        if self.use_penalty:
            logits = self._penalise(logits, rows)
        temps = [temperature_at(self.steps[r], *self.ranges[r]) for r in rows]
        logits = logits / torch.tensor(temps, device=self.device).unsqueeze(-1)
        values, ids = self._candidates(logits, [self.params[r].top_k for r in rows])
        values = self._top_p_sorted(values, [self.params[r].top_p for r in rows])
        probs = torch.softmax(values, dim=-1)  # (B, K), descending
        # Inverse-CDF draw with each row's own uniform number. Candidates are sorted and the
        # filtered ones form a zero-probability tail, so a row draws the same id whatever K is,
        # i.e. whatever other rows share its batch.
        u = torch.stack(
            [torch.rand((), generator=self.generators[r], device=self.device) for r in rows]
        )
        cdf = probs.cumsum(dim=-1)
        pick = (cdf < u.unsqueeze(-1) * cdf[:, -1:]).sum(dim=-1).clamp(max=probs.size(-1) - 1)
        tokens = ids.gather(-1, pick.unsqueeze(-1)).squeeze(-1).tolist()
        self._record(rows, tokens)
        return tokens

    def _penalise(self, logits: torch.Tensor, rows: Sequence[int]) -> torch.Tensor:
        """`apply_repetition_penalty` on just the ids each row has seen (the same arithmetic)."""
        at_row: list[int] = []
        at_id: list[int] = []
        penalty: list[float] = []
        for i, r in enumerate(rows):
            p = self.params[r].repetition_penalty
            if p > 1.0:
                seen = self.counts[r]
                at_row += [i] * len(seen)
                at_id += seen
                penalty += [p] * len(seen)
        if not at_id:
            return logits
        index = (torch.tensor(at_row, device=self.device), torch.tensor(at_id, device=self.device))
        p_t = torch.tensor(penalty, dtype=logits.dtype, device=self.device)
        return logits.index_put(index, penalised(logits[index], p_t))

    def _candidates(
        self, logits: torch.Tensor, top_k: list[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits sorted descending (B, K) with their ids, those below each row's k-th largest set
        to -inf. With top-k on in every row only the k_max best can survive, so K = k_max and the
        rest of the step runs on (B, k_max) instead of (B, V); otherwise K = V."""
        vocab = logits.size(-1)
        k_max = max(top_k)
        if min(top_k) == 0 or k_max >= vocab:
            k_max = vocab
        values, ids = torch.topk(logits, k_max, dim=-1)
        if k_max < vocab:
            # Ids outside the k_max that tie with the last one kept: top-k keeps ties, so widen
            # to exactly the widest row's count.
            widest = int((logits >= values[:, -1:]).sum(-1).max())
            if widest > k_max:
                values, ids = torch.topk(logits, widest, dim=-1)
        K = values.size(-1)
        ks = [min(k, K) if k > 0 else K for k in top_k]
        if min(ks) == K:
            return values, ids  # every row keeps all K (ties at its boundary included)
        k = torch.tensor(ks, device=self.device)
        threshold = values.gather(-1, (k - 1).unsqueeze(-1))
        return values.masked_fill(values < threshold, -math.inf), ids

    def _top_p_sorted(self, values: torch.Tensor, top_p: list[float]) -> torch.Tensor:
        """`top_p_filter` for logits already sorted descending (the candidates), without the
        sort and scatter back."""
        if min(top_p) >= 1.0:
            return values
        p = torch.tensor(top_p, dtype=values.dtype, device=self.device).unsqueeze(-1)
        over = torch.softmax(values, dim=-1).cumsum(dim=-1) > p
        # An id is removed only if the mass *before* it already exceeds p; rows with p = 1 keep all.
        remove = torch.zeros_like(over)
        remove[:, 1:] = over[:, :-1] & (p < 1.0)
        return values.masked_fill(remove, -math.inf)

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
