"""The model itself: config validation, shapes, causality, the KV cache against full recompute,
position-tied λ, brain wiring, and a training step. Tiny configs, CPU only."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import pytest
import torch

from neuroq.model.engine import ModelRunner
from neuroq.model.kv_cache import KVCache
from neuroq.model.model import NeuroQ, NeuroQConfig

# Small ops on 2 cores shared with other jobs: extra OpenMP threads only spin and slow tests down.
torch.set_num_threads(1)

VOCAB = 64


def tiny(mode: str, **overrides: object) -> NeuroQConfig:
    base: dict[str, object] = dict(
        vocab_size=VOCAB, embed_dim=16, hidden_dim=24, num_heads=2, num_layers=2, max_seq_len=32
    )
    if mode == "brain":
        base["num_neurons"] = 6
        return NeuroQConfig.brain_defaults(**{**base, **overrides})
    return NeuroQConfig(mode="layered", **{**base, **overrides})  # type: ignore[arg-type]


@pytest.fixture(params=["layered", "brain"])
def model(request: pytest.FixtureRequest) -> NeuroQ:
    torch.manual_seed(0)
    return NeuroQ(tiny(request.param)).eval()


def test_defaults_are_the_handlers_layered_init() -> None:
    c = NeuroQConfig()
    assert (c.mode, c.embed_dim, c.hidden_dim, c.num_heads, c.num_layers) == (
        "layered",
        64,
        128,
        4,
        2,
    )
    assert (c.max_seq_len, c.dropout, c.lambda_entangle) == (128, 0.1, 0.35)
    b = NeuroQConfig.brain_defaults(vocab_size=100)
    assert (b.mode, b.embed_dim, b.num_heads, b.num_layers, b.max_seq_len, b.num_neurons) == (
        "brain",
        128,
        4,
        3,
        256,
        75,
    )
    assert b.vocab_size == 100


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"embed_dim": 30, "num_heads": 4}, "embed_dim"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"hidden_dim": -1}, "hidden_dim"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_heads": 2.0}, "num_heads"),
        ({"vocab_size": True}, "vocab_size"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"mode": "quantum"}, "mode"),
        ({"num_neurons": 0}, "num_neurons"),
        ({"lambda_entangle": float("nan")}, "lambda_entangle"),
    ],
)
def test_invalid_config_names_the_parameter(overrides: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=rf"^{name}:"):
        NeuroQConfig(**{"vocab_size": VOCAB, **overrides})  # type: ignore[arg-type]


def test_unknown_mode_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="layered, brain"):
        NeuroQConfig(mode="quantum")


def test_config_round_trips_and_rejects_unknown_keys() -> None:
    c = tiny("brain", seed=7)
    assert NeuroQConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"^n_embd:"):
        NeuroQConfig.from_dict({**c.to_dict(), "n_embd": 3})
    with pytest.raises(ValueError, match=r"^embed_dim:"):
        NeuroQConfig.from_dict({**c.to_dict(), "embed_dim": 15})


def test_shapes_and_loss(model: NeuroQ) -> None:
    idx = torch.randint(6, VOCAB, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, VOCAB) and loss is None
    logits, loss = model(idx, idx)
    assert loss is not None and loss.ndim == 0
    # Random init: the loss is near ln(V).
    assert abs(loss.item() - math.log(VOCAB)) < 0.5
    last, _ = model(idx, last_only=True)
    assert last.shape == (3, 1, VOCAB)
    torch.testing.assert_close(last[:, 0], logits[:, -1])


def test_padding_targets_are_ignored(model: NeuroQ) -> None:
    idx = torch.randint(6, VOCAB, (2, 8))
    targets = idx.clone()
    _, full = model(idx, targets)
    targets[:, 4:] = 0
    _, partial = model(idx, targets)
    logits, _ = model(idx)
    expected = torch.nn.functional.cross_entropy(
        logits[:, :4].reshape(-1, VOCAB), idx[:, :4].reshape(-1)
    )
    assert partial is not None and full is not None
    torch.testing.assert_close(partial, expected)
    assert not torch.isclose(partial, full)


def test_causality(model: NeuroQ) -> None:
    """Changing token t never changes the logits of positions before t."""
    idx = torch.randint(6, VOCAB, (1, 16))
    base, _ = model(idx)
    for t in (0, 7, 15):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1 - 6) % (VOCAB - 6) + 6
        out, _ = model(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t:], base[:, t:])


# A forward with a cache: the model's own (the module path), or the engine's ModelRunner under
# inference_mode, which for the layered mode runs packed.py's copies and decode.py's float32 step.
# Every cache test runs both ways against a full forward of the module path.
Forward = Callable[[torch.Tensor, KVCache | None], torch.Tensor]


def module_path(model: NeuroQ) -> Forward:
    return lambda idx, cache: model(idx, cache=cache)[0]


def packed_path(model: NeuroQ) -> Forward:
    runner = ModelRunner(model)

    def forward(idx: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        with torch.inference_mode():
            assert (runner.packed() is not None) == (model.config.mode == "layered")
            return runner(idx, cache)

    return forward


@pytest.fixture(params=[module_path, packed_path], ids=["modules", "packed"])
def path(request: pytest.FixtureRequest) -> Callable[[NeuroQ], Forward]:
    return request.param  # type: ignore[no-any-return]


def test_kv_cache_matches_full_recompute(model: NeuroQ, path: Callable[[NeuroQ], Forward]) -> None:
    """Prefill then one token at a time gives the full forward's logits (both variants)."""
    idx = torch.randint(6, VOCAB, (2, 20))
    full, _ = model(idx)
    forward = path(model)
    cache = model.make_cache(batch_size=2, capacity=20)
    pieces = [forward(idx[:, :7], cache)]
    pieces.append(forward(idx[:, 7:10], cache))  # a multi-token chunk on a filled cache
    for t in range(10, 20):
        pieces.append(forward(idx[:, t : t + 1], cache))
    pieces.append(forward(idx, None))  # and the full window on the same path
    torch.testing.assert_close(torch.cat(pieces[:-1], dim=1), full, rtol=0, atol=1e-5)
    torch.testing.assert_close(pieces[-1], full, rtol=0, atol=1e-5)


def test_left_padded_cache_uses_true_positions(
    model: NeuroQ, path: Callable[[NeuroQ], Forward]
) -> None:
    """A left-padded row in a batch gets the logits it gets alone."""
    short = torch.randint(6, VOCAB, (1, 5))
    long = torch.randint(6, VOCAB, (1, 9))
    nxt = torch.randint(6, VOCAB, (2, 1))
    alone, _ = model(short)
    forward = path(model)
    cache = model.make_cache(batch_size=2, capacity=12, pad=[4, 0])
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    out = forward(batch, cache)
    step = forward(nxt, cache)
    torch.testing.assert_close(out[0, 4:], alone[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(out[1], model(long)[0][0], rtol=0, atol=1e-5)
    torch.testing.assert_close(
        step[0, 0], model(torch.cat([short, nxt[:1]], 1))[0][0, -1], atol=1e-5, rtol=0
    )


def test_packed_weights_follow_parameter_changes() -> None:
    """The runner packs again after an optimiser step, a state_dict load (copying or
    assigning) and a dtype change, so generation never runs stale weights."""
    torch.manual_seed(0)
    m = NeuroQ(tiny("layered")).eval()
    runner = ModelRunner(m)
    idx = torch.randint(6, VOCAB, (1, 10))

    def check() -> None:
        with torch.inference_mode():
            packed = runner(idx)
        torch.testing.assert_close(packed, m(idx)[0], rtol=0, atol=1e-5)

    check()
    opt = torch.optim.SGD(m.parameters(), lr=0.5)
    m.train()
    _, loss = m(idx[:, :-1], idx[:, 1:])
    assert loss is not None
    loss.backward()
    opt.step()
    m.eval()
    check()
    other = NeuroQ(tiny("layered"))
    m.load_state_dict(other.state_dict())
    check()
    m.load_state_dict(NeuroQ(tiny("layered")).state_dict(), assign=True)
    check()
    m.double()
    with torch.inference_mode():
        assert runner(idx).dtype == torch.float64
    check()


def test_dynamic_lambda_follows_position_not_history() -> None:
    """Eval output depends on the token's position only: repeated calls give identical logits,
    and the phase makes eval differ from training mode's fixed φ = 0.5."""
    torch.manual_seed(1)
    m = NeuroQ(tiny("layered", dropout=0.0)).eval()
    idx = torch.randint(6, VOCAB, (1, 12))
    first, _ = m(idx)
    for _ in range(5):
        again, _ = m(idx)
        torch.testing.assert_close(again, first, rtol=0, atol=0)
    m.train()
    train_logits, _ = m(idx)
    # φ(0) = 0.5, so position 0 is the same in both modes; later positions are not.
    torch.testing.assert_close(train_logits[:, 0], first[:, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(train_logits[:, 3], first[:, 3], atol=1e-6)


def test_layered_parameter_count_has_no_dead_parameters() -> None:
    """Spec §1.7's count of the parameters the original actually used, for both sizes."""

    def used(V: int, E: int, F: int, H: int, L: int, P: int) -> int:
        return (
            2 * V * E
            + P * E
            + 2 * E
            + L * (4 * E * E + E * E // H + 6 * E * F + 12 * E + 4 * F + 3)
        )

    small = NeuroQConfig(vocab_size=8000)
    assert NeuroQ(small).num_params() == used(8000, 64, 128, 4, 2, 128) == 1_168_006


def test_every_parameter_gets_a_gradient(model: NeuroQ) -> None:
    model.train()
    idx = torch.randint(6, VOCAB, (2, 12))
    _, loss = model(idx, idx)
    assert loss is not None
    loss.backward()
    missing = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


def test_training_step_reduces_loss() -> None:
    torch.manual_seed(0)
    m = NeuroQ(tiny("layered"))
    opt = torch.optim.AdamW(m.optimizer_groups(0.01), lr=3e-3)
    idx = torch.randint(6, VOCAB, (4, 16))
    losses = []
    for _ in range(15):
        _, loss = m(idx[:, :-1], idx[:, 1:])
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


def test_brain_wiring_is_seeded_and_saved() -> None:
    torch.manual_seed(0)
    a = NeuroQ(tiny("brain", seed=3))
    torch.manual_seed(99)
    b = NeuroQ(tiny("brain", seed=3))
    c = NeuroQ(tiny("brain", seed=4))
    masks = [k for k in a.state_dict() if k.endswith(".mask")]
    assert len(masks) == 2 * 2  # attention + ffn brain per layer
    for k in masks:
        assert torch.equal(a.state_dict()[k], b.state_dict()[k])
        mask = a.state_dict()[k]
        assert torch.all(mask.diagonal() == 0)
    assert any(not torch.equal(a.state_dict()[k], c.state_dict()[k]) for k in masks)
    # A state_dict round trip restores the wiring into a differently seeded model.
    c.load_state_dict(a.state_dict())
    for k in masks:
        assert torch.equal(c.state_dict()[k], a.state_dict()[k])


def test_brain_noise_only_when_asked() -> None:
    torch.manual_seed(0)
    m = NeuroQ(tiny("brain", dropout=0.0)).eval()
    idx = torch.randint(6, VOCAB, (1, 8))
    torch.testing.assert_close(m(idx)[0], m(idx)[0], rtol=0, atol=0)
    assert not torch.allclose(m(idx, noise=True)[0], m(idx)[0])


def test_the_model_file_needs_no_fast_path() -> None:
    """model.py is the plain definition: importing it loads none of the engine's fast paths."""
    fast = ["neuroq.model.engine", "neuroq.model.packed", "neuroq.model.decode"]
    code = f"import sys, neuroq.model.model; print([m for m in {fast!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
