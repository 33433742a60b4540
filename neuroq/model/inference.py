"""Inference copies of a layered model's weights, laid out for fast small-batch matmuls.

A decode step multiplies one row per request by every weight matrix once, so its speed is the
speed at which the BLAS streams weights. On the CPUs this project runs on (MKL on AMD EPYC) that
depends on layout and call count far more than on arithmetic: `x @ W` with W stored (in, out)
streams about 1.4x faster than `F.linear`'s (out, in) weight, and one `bmm` over three stacked
matrices beats three separate products. The layered block's feed-forward half has exactly that
shape: the MLP's first linear, the QBNN up-projection and the up-layer's J all read the same
normalised input (J reads its tanh), and the second stage's three matrices (MLP out, QBNN down,
down-layer J) all produce E-wide outputs.

`PackedLayered` holds such copies (about the model's size again in memory) and runs the blocks
with the same equations as the `nn.Module` path in model.py, which stays the readable reference
and the only path used with autograd. `NeuroQ.forward` switches to it in eval mode with gradients
off (generation and evaluation) and rebuilds it whenever a parameter changed in place (an
optimiser step, `load_state_dict`) or was replaced (`.to(device)`). The results equal the module
path's up to float rounding (the tests hold them to 1e-5).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from neuroq.model.engine import KVCache
    from neuroq.model.model import Block, NeuroQ, QBNNBranch, QBNNLayer


@contextmanager
def native_kernels(dtype: torch.dtype) -> Iterator[None]:
    """oneDNN off for float32 packed blocks: with it on, `F.gelu` on a small contiguous float
    tensor runs as a oneDNN primitive (about 8 µs and a thread-pool wake-up per call, far worse
    when another process holds the second core) instead of the native kernel (about 1.4 µs).
    The switch is process-wide while the blocks run; in float32 nothing else in them uses oneDNN
    (bf16 matmuls would, so other dtypes leave it alone)."""
    mkldnn = torch.backends.mkldnn
    enabled = bool(mkldnn.enabled)
    if dtype == torch.float32:
        mkldnn.enabled = False  # type: ignore[assignment]
    try:
        yield
    finally:
        mkldnn.enabled = enabled  # type: ignore[assignment]


def _version(t: torch.Tensor) -> int:
    return t._version


def parameter_stamp(params: list[torch.nn.Parameter]) -> tuple[list[int], list[int]]:
    """Changes whenever a parameter is updated in place (every in-place op, an optimiser step or
    `load_state_dict`'s copy, bumps the tensor's version counter) or its `.data` is replaced
    (`.to(...)` moves it to new storage). About 20 µs for the large model, 0.5 % of a step."""
    return list(map(torch.Tensor.data_ptr, params)), list(map(_version, params))


@dataclass
class _Block:
    ln1: tuple[torch.Tensor, torch.Tensor]
    w_qkv: torch.Tensor  # (E, 3E)
    b_qkv: torch.Tensor
    attn_J: torch.Tensor  # (H, d, d), pre-scaled by λ_attn·√d
    w_proj: torch.Tensor  # (E, E)
    b_proj: torch.Tensor
    ln2: tuple[torch.Tensor, torch.Tensor]
    w_in: torch.Tensor  # (3, E, F): MLP c_fc, QBNN up linear, up J; inputs z, z, tanh z
    b_in: torch.Tensor  # (3, 1, F): their biases, zero for J
    ln_up: tuple[torch.Tensor, torch.Tensor]
    lam_up: float  # 0.7·span·σ(λ_base) of the up layer
    w_out: torch.Tensor  # (3, F, E): MLP c_proj, QBNN down linear, down J
    b_out: torch.Tensor  # (3, 1, E)
    ln_down: tuple[torch.Tensor, torch.Tensor]
    lam_down: float


class PackedLayered:
    """The layered model's blocks and head for inference (see the module docstring)."""

    def __init__(self, model: NeuroQ) -> None:
        cfg = model.config
        assert cfg.mode == "layered", "PackedLayered packs the layered mode only"
        # Parameter objects replaced outright (load_state_dict(assign=True)) are not seen by
        # the stamp; NeuroQ drops the packed copy in that case itself.
        self.params = list(model.parameters())
        self.stamp = parameter_stamp(self.params)
        self.n_head, self.head_dim = cfg.num_heads, cfg.head_dim
        d = cfg.head_dim
        with torch.no_grad():
            self.blocks = [self._pack(cast("Block", block), d) for block in model.blocks]
            self.ln_f = _ln(model.ln_f)
            self.w_head = model.lm_head.weight.t().contiguous()  # (E, V)
        self._half: list[_HalfBlock] | None = None
        self._half_head: torch.Tensor | None = None

    def is_current(self) -> bool:
        """False once any packed parameter changed since packing."""
        return parameter_stamp(self.params) == self.stamp

    @staticmethod
    def _pack(block: Block, d: int) -> _Block:
        attn, mlp = block.attn, block.mlp
        up, down = cast("QBNNBranch", block.quantum).up, cast("QBNNBranch", block.quantum).down
        w_in, b_in = _stacked(mlp.c_fc, up)
        w_out, b_out = _stacked(mlp.c_proj, down)
        return _Block(
            ln1=_ln(block.ln_1),
            w_qkv=attn.c_attn.weight.t().contiguous(),
            b_qkv=attn.c_attn.bias.clone(),
            attn_J=(attn.J * (attn.lambda_attn * math.sqrt(d))).contiguous(),
            w_proj=attn.c_proj.weight.t().contiguous(),
            b_proj=attn.c_proj.bias.clone(),
            ln2=_ln(block.ln_2),
            w_in=w_in,
            b_in=b_in,
            ln_up=_ln(up.ln),
            lam_up=0.7 * up.lambda_span * float(torch.sigmoid(up.lambda_base)),
            w_out=w_out,
            b_out=b_out,
            ln_down=_ln(down.ln),
            lam_down=0.7 * down.lambda_span * float(torch.sigmoid(down.lambda_base)),
        )

    def run(
        self,
        x: torch.Tensor,
        lambda_phase: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
        half: bool = False,
    ) -> torch.Tensor:
        """All blocks on x (B, T, E); `lambda_phase` is (B, T, 1) or (T, 1) as in model.py. The
        residual stream stays a flat (B·T, E) matrix, the layout the matmuls want. `half` runs
        the matrix products with float16 weights (see `half_blocks`)."""
        B, T, E = x.shape
        lam = lambda_phase.expand(B, T, 1).reshape(B * T, 1)
        h = x.reshape(B * T, E)
        halves = self.half_blocks() if half else [None] * len(self.blocks)
        with native_kernels(h.dtype):
            for i, (p, hp) in enumerate(zip(self.blocks, halves, strict=True)):
                h = self._block(i, p, h, B, T, lam, attn_mask, cache, hp)
        return h.view(B, T, E)

    def half_blocks(self) -> list[_HalfBlock]:
        """float16 copies of every weight matrix (half the bytes of float32), made on first use.

        A decode step multiplies one row by every matrix, so it runs at the speed the weights
        stream through the CPU: on the development VM the 33 MB of float32 weights of the large
        model take about 4 ms per token, float16 (out, in) matrices through PyTorch's reduced-
        precision matrix-vector kernel (float32 accumulation) about 1.1 ms. Only the products
        change: inputs are rounded to float16, outputs come back as float32 with float32
        biases, and everything between them (LayerNorm, tanh, GELU, attention, the cache)
        stays float32."""
        if self._half is None:
            self._half = [_HalfBlock.of(p) for p in self.blocks]
            self._half_head = self.w_head.t().contiguous().half()
        return self._half

    def _block(
        self,
        i: int,
        p: _Block,
        x: torch.Tensor,
        B: int,
        T: int,
        lam: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
        half: _HalfBlock | None,
    ) -> torch.Tensor:
        N, E = x.shape
        H, d = self.n_head, self.head_dim

        # Attention: the fused width-2d form of CausalSelfAttention.
        h = F.layer_norm(x, (E,), *p.ln1)
        qkv = _linear(h, p.w_qkv, p.b_qkv, half.w_qkv if half else None)  # (N, 3E)
        if cache is not None and T == 1:
            y = self._decode_attention(i, p, qkv, B, attn_mask, cache)
        else:
            # tanh of q and k in one call on row-contiguous memory (on the head-split views it
            # costs several times more).
            tq, tk = torch.tanh(qkv[:, : 2 * E]).view(B, T, 2, H, d).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.view(B, T, 3, H, d).permute(2, 0, 3, 1, 4)  # (B, H, T, d) each
            q = torch.cat([q, tq @ p.attn_J], dim=-1)  # (B, H, T, 2d)
            k = torch.cat([k, tk], dim=-1)
            v = F.pad(v, (0, d))
            if cache is not None:
                k, v = cache.update(i, k, v)
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None and T > 1, scale=d**-0.5
            )
            y = y[..., :d].transpose(1, 2).reshape(N, E)
        x = x + _linear(y, p.w_proj, p.b_proj, half.w_proj if half else None)

        # Feed-forward: 0.7·MLP + 0.3·QBNN(up -> down), each stage three products of one
        # width (one bmm in float32).
        z = F.layer_norm(x, (E,), *p.ln2)
        w_in, w_out = (half.w_in, half.w_out) if half else (None, None)
        fc, a_up, delta_up = _stage((z, z, torch.tanh(z)), p.w_in, p.b_in, w_in)
        up = _qbnn_out(a_up, delta_up, lam + p.lam_up, p.ln_up)
        mlp, a_down, delta_down = _stage((F.gelu(fc), up, torch.tanh(up)), p.w_out, p.b_out, w_out)
        down = _qbnn_out(a_down, delta_down, lam + p.lam_down, p.ln_down)
        return torch.add(x, mlp, alpha=0.7).add_(down, alpha=0.3)

    def _decode_attention(
        self,
        i: int,
        p: _Block,
        qkv: torch.Tensor,
        B: int,
        attn_mask: torch.Tensor | None,
        cache: KVCache,
    ) -> torch.Tensor:
        """Attention of one new token per row over the cache, written out: for a single query
        SDPA's setup (and the zero padding of v it needs) costs more than the three small
        products, and each step only adds its key and value to the cache."""
        H, d = self.n_head, self.head_dim
        E = H * d
        t = torch.tanh(qkv[:, : 2 * E]).view(B, 2, H, 1, d)
        q = torch.cat([qkv[:, :E].view(B, H, 1, d), t[:, 0] @ p.attn_J], dim=-1)  # (B, H, 1, 2d)
        k = torch.cat([qkv[:, E : 2 * E].view(B, H, 1, d), t[:, 1]], dim=-1)
        keys, values = cache.update(i, k, qkv[:, 2 * E :].view(B, H, 1, d))  # (B, H, n, ·)
        scores = (q @ keys.transpose(-1, -2)).mul_(d**-0.5)  # (B, H, 1, n)
        if attn_mask is not None:  # left padding: (B, 1, 1, n), True where a key is visible
            scores.masked_fill_(~attn_mask, -math.inf)
        return (torch.softmax(scores, dim=-1) @ values).view(B, E)

    def head(self, x: torch.Tensor, half: bool = False) -> torch.Tensor:
        """Final LayerNorm and the vocabulary projection, x (B, T, E) -> logits (B, T, V)."""
        B, T, E = x.shape
        x = F.layer_norm(x, (E,), *self.ln_f).reshape(B * T, E)
        if half:
            self.half_blocks()
            assert self._half_head is not None
            return F.linear(x.half(), self._half_head).float().view(B, T, -1)
        return (x @ self.w_head).view(B, T, -1)


@dataclass
class _HalfBlock:
    """A block's matrices in float16, stored (out, in): the layout of PyTorch's fast float16
    matrix-vector kernel (the (in, out) float16 product is several times slower)."""

    w_qkv: torch.Tensor
    w_proj: torch.Tensor
    w_in: tuple[torch.Tensor, ...]  # c_fc, up linear, up J: (F, E) each
    w_out: tuple[torch.Tensor, ...]  # c_proj, down linear, down J: (E, F) each

    @staticmethod
    def of(p: _Block) -> _HalfBlock:
        def half(w: torch.Tensor) -> torch.Tensor:  # (in, out) float32 -> (out, in) float16
            return w.t().contiguous().half()

        return _HalfBlock(
            w_qkv=half(p.w_qkv),
            w_proj=half(p.w_proj),
            w_in=tuple(map(half, p.w_in.unbind(0))),
            w_out=tuple(map(half, p.w_out.unbind(0))),
        )


def _linear(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, w_half: torch.Tensor | None
) -> torch.Tensor:
    """x W + b with the float32 (in, out) weight, or with its float16 (out, in) copy."""
    if w_half is None:
        return torch.addmm(b, x, w)
    return _half_linear(x, w_half, b)


def _half_linear(x: torch.Tensor, w_half: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.add(F.linear(x.half(), w_half), b)  # float16 + float32 bias -> float32


def _stage(
    xs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    w: torch.Tensor,
    b: torch.Tensor,
    w_half: tuple[torch.Tensor, ...] | None,
) -> tuple[torch.Tensor, ...]:
    """The three products of a feed-forward stage, input j times matrix j: one bmm over the
    stacked float32 weights, or three float16 matrix products."""
    if w_half is None:
        return torch.baddbmm(b, torch.stack(xs), w).unbind(0)
    return tuple(_half_linear(x, wj, bj) for x, wj, bj in zip(xs, w_half, b, strict=True))


def _stacked(linear: torch.nn.Linear, qbnn: QBNNLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """The three matrices that read one input (an MLP linear, a QBNN layer's linear and its J),
    as one (3, in, out) weight for a single `baddbmm`, and their biases (J has none)."""
    weight = torch.stack([linear.weight.t(), qbnn.linear.weight.t(), qbnn.J]).contiguous()
    zeros = torch.zeros_like(qbnn.linear.bias)
    bias = torch.stack([linear.bias, qbnn.linear.bias, zeros]).unsqueeze(1)
    return weight, bias


def _ln(module: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return module.weight.detach(), module.bias.detach()


def _qbnn_out(
    a: torch.Tensor,
    delta_pre: torch.Tensor,
    lam: torch.Tensor,
    ln: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """GELU(LayerNorm(a + λ·(tanh(h)J ⊙ tanh a))), given a and tanh(h)J (QBNNLayer.forward)."""
    delta = delta_pre * torch.tanh(a)
    return F.gelu(F.layer_norm(torch.addcmul(a, lam, delta), (a.size(-1),), *ln))
