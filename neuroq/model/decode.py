"""One decode step of the layered model (one new token per row, keys and values cached), as a
pure function that runs eagerly or compiled.

Generation spends nearly all its time here, and a step is small: one row per request times every
weight matrix, plus some 250 tiny tensor ops. Three things make it fast, each a choice of the
caller (`Engine(precision=..., compile=...)`, which `ModelRunner` in engine.py passes on):

- Weight bytes. The products stream every weight once per token, so they run at the speed the
  CPU's kernels read weights: `fp32` uses the packed float32 matrices; `fp16` float16 copies
  through PyTorch's reduced-precision matrix-vector kernel (float32 accumulation); `int8`
  8-bit weights with one scale per output row, through our own kernel (kernels.py,
  int8_linear.cpp: integer arithmetic, about 2.5x faster here) when the step is compiled and the
  kernel can be built, else `torch._weight_int8pack_mm` (bfloat16 inputs). Only the products
  change: LayerNorm, tanh, GELU, attention and the cache stay float32, every product's output
  goes on as float32, and the head (`Head`) gives float32 logits from float16 weights in both
  reduced precisions.
- Fewer, fused ops (`compile=True`). `decode_step` is traced once per precision and shape family
  (batch size and cache length stay symbolic) and compiled by TorchInductor into C++ kernels
  that fuse the small ops; weights are inputs, so one compiled step serves every checkpoint of
  the same architecture. It needs a C++ compiler at run time and takes 10-60 s the first time
  (Inductor caches its output on disk); without one the step runs eagerly, with a warning.
- Nothing written in place. The step reads the cached keys and values and returns the new ones,
  which the caller stores (`KVCache.store_step`); attention covers the cached keys and the new key
  as two parts of one softmax. A compiled graph that wrote into the cache would copy it.

The equations are those of `Block` in model.py (and of the packed forward in packed.py, whose
weights the step reads); the tests hold the `fp32` step to the module path's full forward within
1e-5.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils import _pytree as pytree

from neuroq.model.kernels import int8_linear_available
from neuroq.model.kv_cache import KVCache
from neuroq.model.packed import PackedLayered, native_kernels, qbnn_out

log = logging.getLogger("neuroq.model")

#: `fp32` exact; `fp16` and `int8` trade a little accuracy for fewer weight bytes
PRECISIONS = ("fp32", "fp16", "int8")


class Matrix(NamedTuple):
    """A weight matrix in one of the step's layouts: fp32 (in, out); fp16 (out, in); int8
    (out, in) with a scale per output row: float32 for our int8_linear kernel, bfloat16 for
    `torch._weight_int8pack_mm` (an empty `scale` for the others)."""

    w: torch.Tensor
    scale: torch.Tensor


class LayerWeights(NamedTuple):
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    qkv: Matrix  # E -> 3E
    b_qkv: torch.Tensor
    attn_J: torch.Tensor  # (H, d, d), pre-scaled by λ_attn·√d
    proj: Matrix
    b_proj: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    # The feed-forward half's two stages, three stacked E -> F (then F -> E) matrices each, as in
    # packed.py: MLP c_fc, QBNN up linear, up J (inputs z, z, tanh z), then MLP c_proj, QBNN
    # down linear, down J (inputs GELU(fc), up, tanh up); biases (3, 1, ·), zero for J.
    stage_in: Matrix
    b_in: torch.Tensor
    ln_up_w: torch.Tensor
    ln_up_b: torch.Tensor
    lam_up: torch.Tensor  # 0.7·span·σ(λ_base), a 0-d tensor
    stage_out: Matrix
    b_out: torch.Tensor
    ln_down_w: torch.Tensor
    ln_down_b: torch.Tensor
    lam_down: torch.Tensor


class DecodeWeights(NamedTuple):
    layers: tuple[LayerWeights, ...]
    ln_f_w: torch.Tensor
    ln_f_b: torch.Tensor


def decode_weights(
    packed: PackedLayered, precision: str, int8_kernel: bool = False
) -> DecodeWeights:
    """The packed float32 weights in the step's layout for `precision` (fp32 shares them);
    `int8_kernel`: int8 matrices for our kernel (it must be loaded, see kernels.py)."""

    def mat(w: torch.Tensor) -> Matrix:  # w: float32 (in, out), or (3, in, out) stacked
        return _matrix(w, precision, int8_kernel)

    layers = [
        LayerWeights._make(
            [
                *p.ln1,
                mat(p.w_qkv),
                p.b_qkv,
                p.attn_J,
                mat(p.w_proj),
                p.b_proj,
                *p.ln2,
                mat(p.w_in),
                p.b_in,
                *p.ln_up,
                torch.tensor(p.lam_up),
                mat(p.w_out),
                p.b_out,
                *p.ln_down,
                torch.tensor(p.lam_down),
            ]
        )
        for p in packed.blocks
    ]
    return DecodeWeights(tuple(layers), *packed.ln_f)


class Head:
    """The vocabulary projection of the step's final hidden state, with float32 logits.

    Its outputs are the logits, so they stay float32 in every precision: bfloat16 (the int8
    kernel's output) would round them to steps of 1/16 near 10 and float16 to 1/128, making
    top-k ties common. Its weights are the largest matrix (E x V, 8 MB in float32 for the large
    model) and the first to fall out of the CPU cache, so `fp16` and `int8` keep them in float16
    where FBGEMM's packed float16 kernel (float32 in, accumulate and out) is available, which
    halves the bytes read and takes about 0.1 ms instead of 0.2-0.3 ms per token there. `fp32`,
    and any CPU without FBGEMM or any GPU, multiply by the float32 matrix.
    """

    def __init__(self, w_head: torch.Tensor, precision: str) -> None:
        self.w = w_head  # float32 (E, V)
        self.fp16: Any = None  # FBGEMM's packed float16 weight
        fbgemm = "fbgemm" in torch.backends.quantized.supported_engines
        if precision != "fp32" and w_head.device.type == "cpu" and fbgemm:
            self.fp16 = torch.ops.quantized.linear_prepack_fp16(w_head.t().contiguous(), None)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp16 is not None:
            return torch.ops.quantized.linear_dynamic_fp16(x, self.fp16)
        return x @ self.w


def _matrix(w: torch.Tensor, precision: str, int8_kernel: bool = False) -> Matrix:
    none = w.new_empty(0)
    if precision == "fp32":
        return Matrix(w, none)
    rows = w.transpose(-1, -2).contiguous()  # (out, in): the reduced-precision kernels' layout
    if precision == "fp16":
        return Matrix(rows.half(), none)
    scale = rows.abs().amax(dim=-1).clamp(min=1e-12) / 127.0
    q = torch.round(rows / scale.unsqueeze(-1)).clamp(-127, 127).to(torch.int8)
    return Matrix(q.contiguous(), scale if int8_kernel else scale.to(torch.bfloat16))


def _product(x: torch.Tensor, m: Matrix, precision: str) -> torch.Tensor:
    """x @ W in a reduced precision (fp32 products are addmm/baddbmm in the callers); float32
    out from our int8 kernel, float16 or bfloat16 from PyTorch's."""
    if precision == "fp16":
        return F.linear(x.half(), m.w)
    if m.scale.dtype == torch.float32:
        return torch.ops.neuroq.int8_linear(x, m.w, m.scale)
    return torch._weight_int8pack_mm(x.to(torch.bfloat16), m.w, m.scale)


def _linear(x: torch.Tensor, m: Matrix, b: torch.Tensor, precision: str) -> torch.Tensor:
    if precision == "fp32":
        return torch.addmm(b, x, m.w)
    return torch.add(_product(x, m, precision), b)  # reduced + float32 bias -> float32


def _stage(xs: torch.Tensor, m: Matrix, b: torch.Tensor, precision: str) -> torch.Tensor:
    """A feed-forward stage: xs (3, B, in) times its three stacked matrices, plus biases (3, 1,
    out); float32 (3, B, out). Our int8 kernel takes all three in one call (one dispatch and
    one pass over the threads instead of three); the other kernels one matrix at a time."""
    if precision == "fp32":
        return torch.baddbmm(b, xs, m.w)
    if precision == "int8" and m.scale.dtype == torch.float32:
        return torch.ops.neuroq.int8_linear(xs, m.w, m.scale) + b
    scales = [m.scale[i] for i in range(3)] if m.scale.numel() else [m.scale] * 3
    products = [_product(xs[i], Matrix(m.w[i], scales[i]), precision) for i in range(3)]
    return torch.stack(products).float() + b


def decode_step(
    precision: str,
    num_heads: int,
    x: torch.Tensor,
    lam: torch.Tensor,
    visible: torch.Tensor | None,
    keys: torch.Tensor,
    values: torch.Tensor,
    weights: DecodeWeights,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row through every block and the final LayerNorm (the head is `Head`).

    x (B, E): the new tokens' embeddings (token + position); lam (B, 1): their λ phase;
    visible (B, n) bool or None: which cached slots a row may attend to (None: all);
    keys (L, B, H, n, 2d) the cached [k, tanh k]; values (L, B, H, n, d).
    Returns the final hidden states (B, E) and the new keys (L, B, H, 2d) and values (L, B, H, d).
    """
    B, E = x.shape
    H = num_heads
    d = E // H
    n = keys.size(3)
    scale = 1.0 / math.sqrt(d)
    new_keys, new_values = [], []
    for i, w in enumerate(weights.layers):
        # Attention: score = [q, λ√d·tanh(q)J]·[k, tanh k]/√d, as in CausalSelfAttention.
        h = F.layer_norm(x, (E,), w.ln1_w, w.ln1_b)
        qkv = _linear(h, w.qkv, w.b_qkv, precision)  # (B, 3E)
        t = torch.tanh(qkv[:, : 2 * E]).view(B, 2, H, 1, d)
        q = torch.cat([qkv[:, :E].view(B, H, 1, d), t[:, 0] @ w.attn_J], dim=-1)  # (B, H, 1, 2d)
        k = torch.cat([qkv[:, E : 2 * E].view(B, H, 1, d), t[:, 1]], dim=-1)
        v = qkv[:, 2 * E :].view(B, H, 1, d)
        new_keys.append(k.view(B, H, 2 * d))
        new_values.append(v.view(B, H, d))
        old = q @ keys[i].transpose(-1, -2)  # (B, H, 1, n)
        if visible is not None:
            old = old.masked_fill(~visible.view(B, 1, 1, n), -math.inf)
        own = (q * k).sum(dim=-1, keepdim=True)  # (B, H, 1, 1)
        p = torch.softmax(torch.cat([old, own], dim=-1).mul_(scale), dim=-1)
        y = torch.addcmul(p[..., :n] @ values[i], p[..., n:], v)  # (B, H, 1, d)
        x = x + _linear(y.view(B, E), w.proj, w.b_proj, precision)

        # Feed-forward: 0.7·MLP + 0.3·QBNN(up -> down).
        z = F.layer_norm(x, (E,), w.ln2_w, w.ln2_b)
        stage_in = torch.stack([z, z, torch.tanh(z)])
        fc, a_up, delta_up = _stage(stage_in, w.stage_in, w.b_in, precision)
        up = qbnn_out(a_up, delta_up, lam + w.lam_up, (w.ln_up_w, w.ln_up_b))
        stage_out = torch.stack([F.gelu(fc), up, torch.tanh(up)])
        mlp, a_down, delta_down = _stage(stage_out, w.stage_out, w.b_out, precision)
        down = qbnn_out(a_down, delta_down, lam + w.lam_down, (w.ln_down_w, w.ln_down_b))
        x = torch.add(x, mlp, alpha=0.7).add_(down, alpha=0.3)
    x = F.layer_norm(x, (E,), weights.ln_f_w, weights.ln_f_b)
    return x, torch.stack(new_keys), torch.stack(new_values)


StepFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

# Compiled steps by precision, architecture and size class; weights are inputs, so every model of
# one architecture shares them (a checkpoint reloaded after training, say).
_compiled: dict[tuple[Any, ...], StepFn | None] = {}
_compile_lock = threading.Lock()


class Decoder:
    """`decode_step` with one model's weights in one precision, run eagerly or compiled.

    Compiled steps are traced with symbolic sizes, so any batch size and cache length reuse
    one, except sizes 0 and 1, which tracing specialises: a single row, a batch and a padded
    batch (with a mask) get a compilation each. A failed compilation (no C++ compiler, say) is
    logged once and the step runs eagerly from then on.
    """

    def __init__(self, packed: PackedLayered, precision: str, compile: bool) -> None:
        self.packed = packed
        self.precision, self.num_heads, self.compile = precision, packed.n_head, compile
        # Our int8 kernel is native code built on first use, like a compiled step, so it comes
        # with compile=True.
        self.int8_kernel = (
            precision == "int8"
            and compile
            and packed.w_head.device.type == "cpu"
            and int8_linear_available()
        )
        self.weights = decode_weights(packed, precision, self.int8_kernel)
        self.head = Head(packed.w_head, precision)
        self.flat_weights, self.weights_spec = pytree.tree_flatten(self.weights)
        self.arch = (
            precision,
            self.num_heads,
            len(self.weights.layers),
            tuple((t.dtype, tuple(t.shape)) for t in self.flat_weights),
            self.flat_weights[0].device.type,
        )
        # This decoder's compiled steps by size class; the shared `_compiled` is only consulted
        # (hashing `arch`, ~250 entries) when a size class is first seen.
        self._steps: dict[tuple[bool, int, int], StepFn | None] = {}

    def step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token per row, idx (B, 1), after the cached ones: logits (B, 1, V). Stores
        the step's keys and values in the cache and advances it."""
        x, lam = self.packed.step_embeddings(idx, cache)
        keys, values, visible = cache.step_inputs(self.packed.head_dim)
        with native_kernels(x.dtype):
            logits, k, v = self(x, lam, visible, keys, values)
        cache.store_step(k, v)
        cache.advance(1)
        return logits.unsqueeze(1)

    def __call__(
        self,
        x: torch.Tensor,
        lam: torch.Tensor,
        visible: torch.Tensor | None,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        step = self._compiled_step(x, visible, keys) if self.compile else None
        if step is None:
            h, k, v = decode_step(
                self.precision, self.num_heads, x, lam, visible, keys, values, self.weights
            )
        else:
            inputs = [x, lam, keys, values] if visible is None else [x, lam, keys, values, visible]
            h, k, v = step(*inputs, *self.flat_weights)
        return self.head(h), k, v

    def _compiled_step(
        self, x: torch.Tensor, visible: torch.Tensor | None, keys: torch.Tensor
    ) -> StepFn | None:
        size_class = (visible is None, min(x.size(0), 2), min(keys.size(3), 2))
        if size_class not in self._steps:
            key = (self.arch, size_class)
            with _compile_lock:
                if key not in _compiled:
                    _compiled[key] = self._compile(x, visible, keys)
                self._steps[size_class] = _compiled[key]
        return self._steps[size_class]

    def _compile(
        self, x: torch.Tensor, visible: torch.Tensor | None, keys: torch.Tensor
    ) -> StepFn | None:
        from torch.fx.experimental.proxy_tensor import make_fx

        n_inputs = 4 if visible is None else 5
        precision, num_heads, spec = self.precision, self.num_heads, self.weights_spec

        def step(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x, lam, keys, values = args[:4]
            mask = args[4] if n_inputs == 5 else None
            weights = pytree.tree_unflatten(list(args[n_inputs:]), spec)
            return decode_step(precision, num_heads, x, lam, mask, keys, values, weights)

        B, E = x.shape
        example = [x, x.new_zeros(B, 1), keys, keys[..., : E // self.num_heads]]
        if visible is not None:
            example.append(visible)
        example += self.flat_weights
        started = time.perf_counter()
        try:
            # No per-call checks of the ~250 inputs' sizes and strides (a third of a large-model
            # step): they are this class's own tensors, in layouts fixed above.
            with (
                torch.inference_mode(False),
                torch.no_grad(),
                torch._inductor.config.patch(
                    size_asserts=False, alignment_asserts=False, cpp_wrapper=True
                ),
            ):
                graph = make_fx(step, tracing_mode="symbolic")(*example)
                compiled = torch._inductor.standalone_compile(graph, list[Any](example))
        except Exception as exc:  # no C++ compiler, an unsupported op, ...
            log.warning("compiling the decode step failed, running it eagerly: %s", exc)
            return None
        log.info("decode step compiled (%s) in %.1f s", precision, time.perf_counter() - started)
        return compiled
