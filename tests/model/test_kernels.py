"""Our int8 matrix kernel (kernels.py, int8_linear.cpp): it builds and loads on this machine, its
products equal the dequantized float32 product to within the activations' int16 rounding, the
compiled int8 decode step uses it, and a failed build falls back to PyTorch's kernel."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from neuroq.model import decode, kernels
from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from neuroq.model.engine import Engine, ModelRunner
from neuroq.model.packed import PackedLayered

torch.set_num_threads(1)

UNSUPPORTED = kernels._unsupported()
needs_kernel = pytest.mark.skipif(UNSUPPORTED is not None, reason=f"no int8 kernel: {UNSUPPORTED}")


def quantized(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) * 0.05
    scale = w.abs().amax(dim=1) / 127.0
    return torch.round(w / scale[:, None]).to(torch.int8), scale


@needs_kernel
@pytest.mark.parametrize(
    ("m", "n", "k"), [(1, 768, 256), (3, 256, 512), (4, 20, 48), (2, 33, 37), (6, 40, 50)]
)
def test_products_equal_the_dequantized_product(m: int, n: int, k: int) -> None:
    assert kernels.int8_linear_available()
    q, scale = quantized(n, k, seed=n + k)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)) * 3
    x[-1, : k // 2] = 0.0  # uneven rows: each has its own activation scale
    exact = x.double() @ (q.double() * scale.double()[:, None]).t()
    out = torch.ops.neuroq.int8_linear(x, q, scale)
    assert out.shape == (m, n) and out.dtype == torch.float32
    # Activations rounded to int16: per element at most max|x| / 32766, summed over k columns.
    bound = x.abs().amax(dim=1, keepdim=True) / 32766 * (q.abs().double() * scale[:, None]).sum(1)
    assert ((out.double() - exact).abs() <= bound + 1e-5 * exact.abs() + 1e-6).all()
    assert torch.equal(torch.ops.neuroq.int8_linear(torch.zeros(1, k), q, scale), torch.zeros(1, n))


@needs_kernel
def test_a_stack_of_matrices_in_one_call_equals_one_call_each() -> None:
    mats = [quantized(40, 48, seed=s) for s in range(3)]
    q = torch.stack([m[0] for m in mats])
    scale = torch.stack([m[1] for m in mats])
    xs = torch.randn(3, 2, 48)
    out = torch.ops.neuroq.int8_linear(xs, q, scale)
    assert out.shape == (3, 2, 40)
    for g in range(3):
        assert torch.equal(out[g], torch.ops.neuroq.int8_linear(xs[g], q[g], scale[g]))
    with pytest.raises(RuntimeError, match="int8_linear: shapes do not match"):
        torch.ops.neuroq.int8_linear(xs, q[:2], scale[:2])


@needs_kernel
def test_compiled_int8_steps_use_the_kernel_and_stay_close() -> None:
    """On the shipped model: 0.138 from float32 measured (PyTorch's int8 kernel: 0.156)."""
    model, tok, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    model.eval()
    ids = Engine(model, tok, device="cpu").prompt_ids("ChatGPTについて教えて") + list(range(10, 40))
    idx = torch.tensor([ids])
    runner = ModelRunner(model)
    with torch.inference_mode():
        full, _ = model(idx)
        cache = model.make_cache(1, idx.size(1))
        pieces = [runner(idx[:, :5], cache)]
        for t in range(5, idx.size(1)):
            pieces.append(runner(idx[:, t : t + 1], cache, precision="int8", compile=True))
    out = torch.cat(pieces, dim=1)
    assert runner.decoder("int8", True).int8_kernel
    diff = (out - full)[0, 5:].abs().max().item()
    assert 0 < diff < 0.5


def test_a_failed_build_falls_back_to_pytorch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if UNSUPPORTED is not None:
        assert not kernels._load()  # nothing to build here: the reason is logged instead
        return
    monkeypatch.setenv("NEUROQ_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "SOURCE", tmp_path / "broken.cpp")
    (tmp_path / "broken.cpp").write_text("this is not C++\n")
    with caplog.at_level(logging.WARNING, logger="neuroq.model"):
        assert not kernels._load()
    assert "building the int8_linear kernel failed" in caplog.text
    assert list(tmp_path.glob("*.so")) == []  # no half-written library left behind
    # A decoder then keeps bfloat16 scales for torch._weight_int8pack_mm.
    monkeypatch.setattr(decode, "int8_linear_available", lambda: False)
    model = load_checkpoint(DEFAULT_CHECKPOINT)[0].eval()
    with torch.no_grad():
        decoder = decode.Decoder(PackedLayered(model), "int8", compile=True)
    assert not decoder.int8_kernel
    assert decoder.weights.layers[0].qkv.scale.dtype == torch.bfloat16


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEUROQ_KERNEL_CACHE", "/somewhere/kernels")
    assert kernels.cache_dir() == Path("/somewhere/kernels")
    monkeypatch.delenv("NEUROQ_KERNEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert kernels.cache_dir() == Path("/xdg/neuroq/kernels")
