"""decode.py's step in its three precisions, eager and compiled: float32 equals the full forward,
float16 and int8 stay close to it on the shipped model, the reduced precisions apply only to
decode steps of at most REDUCED_MAX_ROWS rows, a failed compile falls back to eager, and bad
settings are rejected by name."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import torch

from neuroq.model import decode
from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from neuroq.model.engine import REDUCED_MAX_ROWS, Engine, ModelRunner
from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.sampling import SamplingParams

torch.set_num_threads(1)

VOCAB = 300


def tiny(mode: str = "layered") -> NeuroQ:
    torch.manual_seed(0)
    shape = dict(embed_dim=32, hidden_dim=64, num_heads=2, num_layers=2, max_seq_len=40)
    if mode == "brain":
        return NeuroQ(NeuroQConfig.brain_defaults(vocab_size=VOCAB, num_neurons=6, **shape)).eval()
    return NeuroQ(NeuroQConfig(vocab_size=VOCAB, **shape)).eval()  # type: ignore[arg-type]


def decode_logits(
    model: NeuroQ,
    idx: torch.Tensor,
    prefill: int,
    precision: str = "fp32",
    compile: bool = False,
    pad: list[int] | None = None,
) -> torch.Tensor:
    """Logits of a prefill of `prefill` tokens, then one cached step per remaining token, as the
    engine runs them."""
    runner = ModelRunner(model)
    with torch.inference_mode():
        cache = model.make_cache(idx.size(0), idx.size(1) + 3, pad=pad)
        pieces = [runner(idx[:, :prefill], cache)]
        for t in range(prefill, idx.size(1)):
            step = idx[:, t : t + 1]
            pieces.append(runner(step, cache, precision=precision, compile=compile))
    return torch.cat(pieces, dim=1)


@pytest.fixture(scope="module")
def shipped() -> tuple[NeuroQ, torch.Tensor, torch.Tensor]:
    """The shipped model, a prompt plus 50 tokens, and the module path's full forward."""
    model, tok, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model.eval()
    ids = Engine(model, tok, device="cpu").prompt_ids("ChatGPTについて教えて") + list(range(10, 60))
    idx = torch.tensor([ids])
    full, _ = model(idx)
    return model, idx, full


# Measured on the development machine: float16 at most 0.014 from float32 and int8 at most 0.156,
# on logits with a spread (std) of 3.6 and maxima near 20. The bounds leave room for another
# CPU's kernels; a zero difference would mean the reduced weights were not used.
@pytest.mark.parametrize(("precision", "bound"), [("fp16", 0.05), ("int8", 0.5)])
def test_reduced_precision_stays_close_on_the_shipped_model(
    shipped: tuple[NeuroQ, torch.Tensor, torch.Tensor], precision: str, bound: float
) -> None:
    model, idx, full = shipped
    out = decode_logits(model, idx, prefill=5, precision=precision)
    diff = (out - full)[0, 5:].abs().max().item()
    assert 0 < diff < bound
    torch.testing.assert_close(out[:, :5], full[:, :5], rtol=0, atol=1e-5)  # prefill: float32


def test_reduced_precisions_generate_like_float32_on_the_shipped_model() -> None:
    model, tok, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    params = SamplingParams(seed=0, max_length=40)
    (expected,) = Engine(model, tok, device="cpu").generate(["こんにちは"], params)
    for precision in ("fp16", "int8"):
        (got,) = Engine(model, tok, device="cpu", precision=precision).generate(
            ["こんにちは"], params
        )
        # Not guaranteed in general (a near-tie can flip a draw); on this prompt and seed all
        # three agree, as float16 did on all 20 prompt/seed pairs tried and int8 on 17.
        assert got.token_ids == expected.token_ids, precision


def test_head_keeps_float32_logits_from_float16_weights() -> None:
    """Reduced precisions read the head's weights as float16 where FBGEMM is available; the
    logits stay float32 (no rounding to a float16 grid) and fp32 multiplies exactly."""
    torch.manual_seed(0)
    w = torch.randn(64, 3000) * 0.05  # (E, V)
    x = torch.randn(2, 64)
    exact = x @ w
    assert torch.equal(decode.Head(w, "fp32")(x), exact)
    for precision in ("fp16", "int8"):
        head = decode.Head(w, precision)
        out = head(x)
        assert out.dtype == torch.float32
        if "fbgemm" in torch.backends.quantized.supported_engines:
            assert head.fp16 is not None
            # float16 weights: relative error about 2^-11 per weight, summed over 64 terms
            diff = (out - exact).abs().max().item()
            assert 0 < diff < 5e-3
            # float32 accumulation and output: values off the float16 grid survive
            assert not torch.equal(out, out.half().float())
        else:
            assert torch.equal(out, exact)


def test_compiled_float32_step_matches_the_full_forward(
    shipped: tuple[NeuroQ, torch.Tensor, torch.Tensor],
) -> None:
    """Compiled kernels fuse and reorder float32 arithmetic: 1.4e-5 measured on logits up to 20."""
    model, idx, full = shipped
    out = decode_logits(model, idx, prefill=5, compile=True)
    torch.testing.assert_close(out, full, rtol=0, atol=1e-4)


def test_compiled_step_serves_padded_batches_and_other_cache_sizes() -> None:
    """One compilation covers cache lengths and capacities; left padding stays masked."""
    model = tiny()
    short = torch.randint(6, VOCAB, (1, 8))
    long = torch.randint(6, VOCAB, (1, 12))
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    eager = decode_logits(model, batch, prefill=6, pad=[4, 0])
    compiled = decode_logits(model, batch, prefill=6, pad=[4, 0], compile=True)
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-4)
    torch.testing.assert_close(compiled[0, 4:], model(short)[0][0], rtol=0, atol=1e-4)
    again = decode_logits(model, batch[:, :10], prefill=3, pad=[4, 0], compile=True)
    torch.testing.assert_close(again, eager[:, :10], rtol=0, atol=1e-4)


def test_a_failed_compile_runs_the_step_eagerly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(torch._inductor, "standalone_compile", broken)
    monkeypatch.setattr(decode, "_compiled", {})
    model = tiny()
    idx = torch.randint(6, VOCAB, (1, 9))
    with caplog.at_level(logging.WARNING, logger="neuroq.model"):
        out = decode_logits(model, idx, prefill=4, precision="fp16", compile=True)
    assert "no C++ compiler here" in caplog.text
    torch.testing.assert_close(out, decode_logits(model, idx, prefill=4, precision="fp16"))


def test_wider_batches_stay_float32() -> None:
    model = tiny()
    idx = torch.randint(6, VOCAB, (REDUCED_MAX_ROWS + 1, 12))
    full, _ = model(idx)
    for precision in ("fp16", "int8"):  # more rows than REDUCED_MAX_ROWS: float32 products
        out = decode_logits(model, idx, prefill=4, precision=precision)
        torch.testing.assert_close(out, full, rtol=0, atol=1e-5)
        one = decode_logits(model, idx[:1], prefill=4, precision=precision)
        assert not torch.allclose(one, full[:1], rtol=0, atol=1e-6)


def test_the_brain_mode_ignores_precision_and_compile() -> None:
    model = tiny("brain")
    idx = torch.randint(6, VOCAB, (1, 10))
    expected = decode_logits(model, idx, 3)
    for precision in ("fp16", "int8"):
        out = decode_logits(model, idx, 3, precision=precision, compile=True)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


class _Bytes:
    vocab_size = VOCAB

    def encode(self, text: str) -> list[int]:
        return [6 + b % (VOCAB - 6) for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "bf16"}, r"^precision: expected one of fp32, fp16, int8, got 'bf16'"),
        ({"precision": "FP16"}, r"^precision: "),
        ({"precision": None}, r"^precision: "),
        ({"compile": "yes"}, r"^compile: expected true or false"),
        ({"precision": "int8", "device": "cuda"}, r"^precision: int8 runs on the CPU only"),
    ],
)
def test_bad_engine_settings_are_rejected_by_name(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Engine(tiny(), _Bytes(), **{"device": "cpu", **kwargs})
