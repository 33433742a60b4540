"""Packed weights: inference copies of a layered model's weights, laid out for fast small-batch
matmuls, and the model's forward on them.

A decode step multiplies one row per request by every weight matrix once, so its speed is the
speed at which the BLAS streams weights. On the CPUs this project runs on (MKL on AMD EPYC) that
depends on layout and call count far more than on arithmetic: `x @ W` with W stored (in, out)
streams about 1.4x faster than `F.linear`'s (out, in) weight, and one `bmm` over three stacked
matrices beats three separate products. The layered block's feed-forward half has exactly that
shape: the MLP's first linear, the QBNN up-projection and the up-layer's J all read the same
normalised input (J reads its tanh), and the second stage's three matrices (MLP out, QBNN down,
down-layer J) all produce E-wide outputs.

`PackedLayered` holds such copies (about the model's size again in memory) and runs the model
with the same equations as the `nn.Module` path in model.py, which stays the readable definition
and the only path used with autograd. The engine's `ModelRunner` (engine.py) uses it in eval mode
with gradients off and packs again whenever a parameter changed in place (an optimiser step,
`load_state_dict`) or was replaced (`.to(device)`, `load_state_dict(assign=True)`). The results
equal the module path's up to float rounding (the tests hold them to 1e-5). Single-token cached
steps go through decode.py, which reads these same copies.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F

from neuroq.model.kv_cache import KVCache
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
    """A layered model's weights for inference and its forward on them (see the module
    docstring). Eval mode only: no dropout, and the λ phase of each token's position."""

    def __init__(self, model: NeuroQ) -> None:
        cfg = model.config
        assert cfg.mode == "layered", "PackedLayered packs the layered mode only"
        self.params = list(model.parameters())
        self.stamp = parameter_stamp(self.params)
        self.n_head, self.head_dim = cfg.num_heads, cfg.head_dim
        self.max_seq_len = cfg.max_seq_len
        d = cfg.head_dim
        with torch.no_grad():
            self.wte = model.wte.weight.detach()  # shared, not copied: embeddings are lookups
            self.wpe = model.wpe.weight.detach()
            self.lambda_phase_table = model.lambda_phase_table
            self.blocks = [self._pack(cast(Block, block), d) for block in model.blocks]
            self.ln_f = _ln(model.ln_f)
            self.w_head = model.lm_head.weight.t().contiguous()  # (E, V)

    def is_current(self, model: NeuroQ) -> bool:
        """False once any of the model's parameters changed or was replaced since packing."""
        params = list(model.parameters())
        same = len(params) == len(self.params) and all(map(operator.is_, params, self.params))
        return same and parameter_stamp(params) == self.stamp

    @staticmethod
    def _pack(block: Block, d: int) -> _Block:
        attn, mlp = block.attn, block.mlp
        up, down = cast(QBNNBranch, block.quantum).up, cast(QBNNBranch, block.quantum).down
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

    def forward(
        self, idx: torch.Tensor, cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits (B, T, V) for token ids (B, T), or (B, 1, V) with `last_only`: what
        `NeuroQ.forward` gives in eval mode, positions and padding from the cache as there."""
        T = idx.size(1)
        if cache is None:
            assert self.max_seq_len >= T, (
                f"sequence of length {T} exceeds max_seq_len {self.max_seq_len}"
            )
            pos = torch.arange(T, device=idx.device)  # (T,)
            attn_mask = None
        else:
            pos = cache.positions(T)  # (B, T)
            attn_mask = cache.attention_mask(T)
        x = F.embedding(idx, self.wte) + F.embedding(pos, self.wpe)
        lambda_phase = self.lambda_phase_table.index_select(0, pos.reshape(-1))
        x = self.run(x, lambda_phase.view(*pos.shape, 1), attn_mask, cache)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:, :]
        return self.head(x)

    def step_embeddings(
        self, idx: torch.Tensor, cache: KVCache
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The input of a decode step: embeddings (B, E) of one new token per row (B, 1) at its
        row's next position, and that position's λ phase (B, 1)."""
        pos = cache.positions(1)  # (B, 1)
        x = F.embedding(idx, self.wte) + F.embedding(pos, self.wpe)
        lambda_phase = F.embedding(pos, self.lambda_phase_table.unsqueeze(-1))  # (B, 1, 1)
        return x.view(idx.size(0), -1), lambda_phase.view(idx.size(0), 1)

    def run(
        self,
        x: torch.Tensor,
        lambda_phase: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        """All blocks on x (B, T, E); `lambda_phase` is (B, T, 1) or (T, 1) as in model.py. The
        residual stream stays a flat (B·T, E) matrix, the layout the matmuls want."""
        B, T, E = x.shape
        lam = lambda_phase.expand(B, T, 1).reshape(B * T, 1)
        h = x.reshape(B * T, E)
        with native_kernels(h.dtype):
            for i, p in enumerate(self.blocks):
                h = self._block(i, p, h, B, T, lam, attn_mask, cache)
        return h.view(B, T, E)

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
    ) -> torch.Tensor:
        N, E = x.shape
        H, d = self.n_head, self.head_dim

        # Attention: the fused width-2d form of CausalSelfAttention.
        h = F.layer_norm(x, (E,), *p.ln1)
        qkv = torch.addmm(p.b_qkv, h, p.w_qkv)  # (N, 3E)
        # tanh of q and k in one call on row-contiguous memory (on the head-split views it costs
        # several times more).
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
        x = x + torch.addmm(p.b_proj, y, p.w_proj)

        # Feed-forward: 0.7·MLP + 0.3·QBNN(up -> down), each stage one bmm over three matrices.
        z = F.layer_norm(x, (E,), *p.ln2)
        fc, a_up, delta_up = torch.baddbmm(p.b_in, torch.stack([z, z, torch.tanh(z)]), p.w_in)
        up = qbnn_out(a_up, delta_up, lam + p.lam_up, p.ln_up)
        mlp, a_down, delta_down = torch.baddbmm(
            p.b_out, torch.stack([F.gelu(fc), up, torch.tanh(up)]), p.w_out
        )
        down = qbnn_out(a_down, delta_down, lam + p.lam_down, p.ln_down)
        return torch.add(x, mlp, alpha=0.7).add_(down, alpha=0.3)

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and the vocabulary projection, x (B, T, E) -> logits (B, T, V)."""
        B, T, E = x.shape
        x = F.layer_norm(x, (E,), *self.ln_f)
        return (x.reshape(B * T, E) @ self.w_head).view(B, T, -1)


def qbnn_out(
    a: torch.Tensor,
    delta_pre: torch.Tensor,
    lam: torch.Tensor,
    ln: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """GELU(LayerNorm(a + λ·(tanh(h)J ⊙ tanh a))), given a and tanh(h)J (QBNNLayer.forward).
    Shared with the decode step (decode.py)."""
    delta = delta_pre * torch.tanh(a)
    return F.gelu(F.layer_norm(torch.addcmul(a, lam, delta), (a.size(-1),), *ln))


def _stacked(linear: torch.nn.Linear, qbnn: QBNNLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """The three matrices that read one input (an MLP linear, a QBNN layer's linear and its J),
    as one (3, in, out) weight for a single `baddbmm`, and their biases (J has none)."""
    weight = torch.stack([linear.weight.t(), qbnn.linear.weight.t(), qbnn.J]).contiguous()
    zeros = torch.zeros_like(qbnn.linear.bias)
    bias = torch.stack([linear.bias, qbnn.linear.bias, zeros]).unsqueeze(1)
    return weight, bias


def _ln(module: torch.nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return module.weight.detach(), module.bias.detach()
