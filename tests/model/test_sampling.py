"""Sampling filters on hand-made logits, the temperature schedule, parameter validation and the
per-row sampler."""

from __future__ import annotations

import math

import pytest
import torch

from neuroq.model.sampling import (
    MAX_LENGTH_CAP,
    PENALTY_WINDOW,
    TOP_K_CAP,
    Sampler,
    SamplingParams,
    apply_repetition_penalty,
    temperature_at,
    top_k_filter,
    top_p_filter,
)
from neuroq.model.tokenizer import ASSISTANT_ID

# Small ops on 2 cores shared with other jobs: extra OpenMP threads only spin and slow tests down.
torch.set_num_threads(1)

INF = math.inf


def test_repetition_penalty_ctrl_rule() -> None:
    """Seen ids: positive logits are divided, negative ones multiplied; unseen ids untouched."""
    logits = torch.tensor([[2.0, -2.0, 1.0, -1.0, 0.0]])
    seen = torch.tensor([[True, True, False, False, True]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0, -1.0, 0.0]]
    # Per-row penalties.
    out = apply_repetition_penalty(
        torch.tensor([[3.0, -3.0], [3.0, -3.0]]),
        torch.ones(2, 2, dtype=torch.bool),
        torch.tensor([[3.0], [1.0]]),
    )
    assert out.tolist() == [[1.0, -9.0], [3.0, -3.0]]


def test_top_k_keeps_k_largest_and_ties() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 5.0, 2.0]] * 3)
    out = top_k_filter(logits, torch.tensor([2, 3, 0]))
    assert out[0].tolist() == [-INF, 5.0, -INF, 5.0, -INF]
    assert out[1].tolist() == [-INF, 5.0, 3.0, 5.0, -INF]
    assert out[2].tolist() == logits[2].tolist()  # k = 0: disabled
    tied = top_k_filter(torch.tensor([[4.0, 4.0, 4.0, 1.0]]), 1)
    assert tied.tolist() == [[4.0, 4.0, 4.0, -INF]]  # ties at the boundary survive
    assert top_k_filter(torch.tensor([[1.0, 2.0]]), 50).tolist() == [[1.0, 2.0]]  # k > V


def test_sampler_candidates_keep_what_the_filters_keep() -> None:
    """The sampler's shortcuts (one top-k fetch with a tie check, top-p on the already sorted
    candidates, in NumPy) keep exactly the ids `top_k_filter` then `top_p_filter` keep, with
    weights proportional to their probabilities."""
    torch.manual_seed(0)
    logits = torch.randn(5, 300)
    logits[1, 10:13] = logits[1].max() - 0.5  # ties inside the fetched candidates
    # Row 4: 20 clear leaders, then 60 ids tied at the top-k boundary, reaching past k_max + 1.
    logits[4] = torch.randn(300) * 0.1 - 5.0
    logits[4, :20] = 1.0 + torch.arange(20) * 0.1
    logits[4, 20:80] = 0.25
    ks, ps = [5, 12, 0, 40, 30], [0.5, 0.9, 0.3, 1.0, 1.0]
    sampler = Sampler([SamplingParams(top_k=k, top_p=p) for k, p in zip(ks, ps, strict=True)])
    weights, ids = sampler._candidates(logits.numpy(), range(5))
    expected = top_p_filter(top_k_filter(logits, torch.tensor(ks)), torch.tensor(ps))
    for r in range(5):
        kept = ids[r][weights[r] > 0]
        assert sorted(kept.tolist()) == torch.isfinite(expected[r]).nonzero().view(-1).tolist()
        probs = torch.softmax(expected[r], dim=-1)[torch.from_numpy(kept)].double()
        got = torch.from_numpy(weights[r][weights[r] > 0])
        torch.testing.assert_close(got / got.sum(), probs / probs.sum())
    assert (weights[4] > 0).sum() == 80  # the whole tie survived


def test_top_p_keeps_the_nucleus() -> None:
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])
    logits = probs.log().unsqueeze(0).repeat(3, 1)
    out = top_p_filter(logits, torch.tensor([0.6, 0.45, 1.0]))
    # p = 0.6: 0.5 (mass before it 0) and 0.3 (mass before it 0.5 <= 0.6) stay; 0.15 has 0.8 before.
    assert torch.isfinite(out[0]).tolist() == [False, True, False, True]
    # p = 0.45: the top id always stays, even though it alone exceeds p.
    assert torch.isfinite(out[1]).tolist() == [False, True, False, False]
    assert torch.equal(out[2], logits[2])
    kept = out[0][torch.isfinite(out[0])]
    assert torch.equal(kept, logits[0][[1, 3]])  # surviving logits are unchanged


def test_temperature_schedule_values() -> None:
    assert temperature_at(0, 0.4, 0.8) == pytest.approx(0.6)  # starts at the midpoint
    for step in (1, 5, 10, 21, 149):
        expected = 0.4 + 0.4 * (0.5 + 0.5 * math.sin(0.3 * step))
        assert temperature_at(step, 0.4, 0.8) == pytest.approx(expected)
    values = [temperature_at(s, 0.56, 0.84) for s in range(MAX_LENGTH_CAP)]
    assert min(values) >= 0.56 and max(values) <= 0.84
    assert max(values) > 0.83 and min(values) < 0.57  # the schedule spans the whole range
    assert temperature_at(5, 0.5, 0.5) == 0.5


def test_temperature_maps_to_range() -> None:
    assert SamplingParams(temperature=0.5).temperature_range == pytest.approx((0.4, 0.6))
    assert SamplingParams(temp_min=0.3, temp_max=0.9).temperature_range == (0.3, 0.9)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"max_length": 0}, "max_length"),
        ({"max_length": -5}, "max_length"),
        ({"max_length": MAX_LENGTH_CAP + 1}, "max_length"),
        ({"max_length": 10.0}, "max_length"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temp_min": 0.5}, "temp_max"),
        ({"temp_max": 0.5}, "temp_min"),
        ({"temp_min": 0.0, "temp_max": 0.5}, "temp_min"),
        ({"temp_min": 0.9, "temp_max": 0.5}, "temp_min"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": TOP_K_CAP + 1}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_p": "0.9"}, "top_p"),
        ({"repetition_penalty": 0.5}, "repetition_penalty"),
        ({"repetition_penalty": 100.0}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"stop_at_eos": "yes"}, "stop_at_eos"),
    ],
)
def test_invalid_params_name_the_parameter(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}:"):
        SamplingParams(**kwargs)  # type: ignore[arg-type]


def test_params_from_dict() -> None:
    p = SamplingParams(max_length=12, top_k=0, seed=4)
    assert SamplingParams.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match=r"^max_tokens:"):
        SamplingParams.from_dict({"max_tokens": 5})


def greedy(**kw: object) -> SamplingParams:
    """top_k = 1: the draw is the argmax, so these tests are deterministic."""
    return SamplingParams(top_k=1, top_p=1.0, seed=0, **kw)  # type: ignore[arg-type]


def test_sampler_penalises_generated_tokens_only() -> None:
    logits = torch.full((1, 16), -5.0)
    logits[0, 10], logits[0, 11] = 2.0, 1.5
    sampler = Sampler([greedy(repetition_penalty=2.0)])
    assert sampler.sample(logits, [0]) == [10]
    # 10 was generated: 2.0 / 2 = 1.0 < 1.5, so 11 wins now, then 10 again (1.0 vs 0.75).
    assert sampler.sample(logits, [0]) == [11]
    assert sampler.sample(logits, [0]) == [10]
    # Without a penalty the argmax repeats.
    plain = Sampler([greedy(repetition_penalty=1.0)])
    assert [plain.sample(logits, [0])[0] for _ in range(3)] == [10, 10, 10]


def test_sampler_does_not_penalise_special_tokens() -> None:
    logits = torch.full((1, 16), -5.0)
    logits[0, ASSISTANT_ID], logits[0, 11] = 2.0, 1.5
    sampler = Sampler([greedy(repetition_penalty=4.0)])
    assert [sampler.sample(logits, [0])[0] for _ in range(3)] == [ASSISTANT_ID] * 3


def test_penalty_window_forgets_old_tokens() -> None:
    sampler = Sampler([greedy(repetition_penalty=2.0)])
    for token in range(6, 6 + PENALTY_WINDOW + 1):
        sampler._record([0], [token])
    assert 6 not in sampler.counts[0]  # fell out of the window
    assert sampler.counts[0][7] == 1
    assert sum(sampler.counts[0].values()) == PENALTY_WINDOW


def test_seeded_rows_are_independent_of_batching() -> None:
    """A row draws the same tokens alone or beside other rows (one generator per row)."""
    torch.manual_seed(0)
    logits = torch.randn(3, 50, 40)  # (rows, steps, vocab)
    params = [SamplingParams(seed=s, top_k=0, top_p=1.0, repetition_penalty=1.3) for s in (1, 2, 3)]
    together = Sampler(params)
    batched = [together.sample(logits[:, t], [0, 1, 2]) for t in range(50)]
    for r in range(3):
        alone = Sampler([params[r]])
        tokens = [alone.sample(logits[r : r + 1, t], [0])[0] for t in range(50)]
        assert tokens == [step[r] for step in batched]
    assert len({tuple(step[r] for step in batched) for r in range(3)}) == 3


def test_sampling_follows_the_distribution() -> None:
    """Two ids with probabilities 0.8/0.2 over 2000 draws: the count of the first is ~N(1600, 18²);
    the bounds are 5.6 standard deviations wide, a false failure has odds below 1e-7."""
    logits = torch.tensor([[math.log(0.8), math.log(0.2)]]).repeat(2000, 1)
    params = SamplingParams(
        seed=123, temp_min=1.0, temp_max=1.0, top_k=0, top_p=1.0, repetition_penalty=1.0
    )
    sampler = Sampler([params])
    draws = [sampler.sample(logits[i : i + 1], [0])[0] for i in range(2000)]
    assert 1500 < draws.count(0) < 1700
