"""The NeuroQ language model: a small GPT with "quantum-inspired" (QBNN) corrections.

Two variants share one skeleton (embeddings -> pre-norm blocks -> final LayerNorm -> untied head):

- layered: every block adds a QBNN branch beside the feed-forward network, and attention scores
  get an entanglement term  λ_attn · tanh(q)ᵀ J tanh(k).
- brain: a recurrent "brain" of sparsely connected neurons modulates the attention queries and
  keys and forms the quantum branch of the feed-forward network.

Departures from the original, all deliberate (docs/model-engine.md, Decisions): the dynamic λ
phase is a function of the token's position rather than of a per-layer call counter, so outputs
are reproducible and a KV cache is exact; the brain's connection masks come from a seed in the
config and its noise is off at inference; the borrowed parameters that never received gradients
are gone.

This file is the definition: the modules and their forward math, used for training, evaluation
and as the reference. `NeuroQ.generate_naive` re-runs the whole window through these modules for
every token, like the original; it is slow on purpose, the reference that the engine is tested
against. The engine (engine.py) runs the same equations faster: on packed copies of the weights
(packed.py) and a one-token decode step (decode.py); nothing here depends on those.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuroq.model.kv_cache import KVCache
from neuroq.model.sampling import Sampler, SamplingParams
from neuroq.model.tokenizer import EOS_ID, PAD_ID, USER_ID

MODES = ("layered", "brain")

# Brain layer constants of the original; fixed there, so not part of the config.
BRAIN_ATTN_DENSITY, BRAIN_ATTN_LAMBDA = 0.2, 0.3
BRAIN_FFN_DENSITY, BRAIN_FFN_LAMBDA = 0.25, 0.35
BRAIN_TIME_STEPS = 2
BRAIN_NOISE_SCALE = 0.1
# Frequency of the dynamic-λ phase: φ(t) = 0.5 + 0.5·sin(0.2·t), period about 31 positions.
PHASE_FREQUENCY = 0.2


def default_device() -> torch.device:
    """CUDA when present, else the CPU. Callers may always pass a device explicitly."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class NeuroQConfig:
    """Every shape of the model. Defaults are the original handler's `init` for the layered mode
    (docs/model-engine.md, Model API); `NeuroQConfig.brain_defaults()` gives the brain mode's."""

    mode: str = "layered"
    # 8000 pieces: the size of the SentencePiece tokenizer the handler ships.
    vocab_size: int = 8000
    embed_dim: int = 64  # E
    # F, the width of the feed-forward network and of the QBNN branch (the handler's
    # `num_neurons`). The brain mode uses a plain 4·E feed-forward network, as GPT-2 does.
    hidden_dim: int = 128
    num_heads: int = 4  # H; must divide embed_dim
    num_layers: int = 2  # L
    # P: positions are learned, so this is a hard limit on the window the model sees at once.
    max_seq_len: int = 128
    dropout: float = 0.1
    # λ0: the QBNN correction strength; λ_eff moves within [0.5·λ0, 1.5·λ0].
    lambda_entangle: float = 0.35
    # Brain mode: N neurons in the attention brain (the FFN brain uses 2N).
    num_neurons: int = 75
    # Seeds the brain's sparse connection masks, so two models built from one config have the same
    # wiring. The masks are also saved as buffers, so checkpoints carry them.
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: unknown mode {self.mode!r}, allowed: {', '.join(MODES)}")
        for name in (
            "vocab_size",
            "embed_dim",
            "hidden_dim",
            "num_heads",
            "num_layers",
            "max_seq_len",
            "num_neurons",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"embed_dim: must be divisible by num_heads ({self.embed_dim} % {self.num_heads} "
                f"= {self.embed_dim % self.num_heads})"
            )
        if self.vocab_size <= USER_ID:
            raise ValueError(f"vocab_size: must exceed the 6 special ids, got {self.vocab_size}")
        if not _is_real(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be a number in [0, 1), got {self.dropout!r}")
        if not _is_real(self.lambda_entangle) or self.lambda_entangle < 0:
            raise ValueError(
                f"lambda_entangle: must be a non-negative number, got {self.lambda_entangle!r}"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed: must be a non-negative integer, got {self.seed!r}")

    @classmethod
    def brain_defaults(cls, **overrides: Any) -> NeuroQConfig:
        """The brain mode's handler defaults: E128 H4 L3 P256, N75, FFN 4·E."""
        values: dict[str, Any] = dict(
            mode="brain",
            embed_dim=128,
            hidden_dim=512,
            num_heads=4,
            num_layers=3,
            max_seq_len=256,
            num_neurons=75,
        )
        values.update(overrides)
        return cls(**values)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuroQConfig:
        """Rebuild a config saved with `to_dict`; unknown keys are rejected by name."""
        if not isinstance(data, dict):
            raise ValueError(f"config: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{unknown[0]}: unknown config key (allowed: {sorted(known)})")
        return cls(**data)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class QBNNLayer(nn.Module):
    """A linear layer plus an entanglement correction:

    a = W h + b,  Δ = (tanh(h) J) ⊙ tanh(a),  out = GELU(LayerNorm(a + λ_eff Δ))

    λ_eff = λmin + (λmax − λmin)·(0.7·σ(λ_base) + 0.3·φ) lies in [0.5·λ0, 1.5·λ0]. The phase part
    λmin + 0.3·(λmax − λmin)·φ is the same for every layer (one λ0 per model), so the model computes
    it once per forward (`lambda_phase`: a scalar in training, (B, T, 1) or (T, 1) in eval).
    """

    def __init__(self, n_in: int, n_out: int, lambda0: float) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.J = nn.Parameter(torch.randn(n_in, n_out) * 0.02)
        self.lambda_base = nn.Parameter(torch.tensor(0.5))
        self.ln = nn.LayerNorm(n_out)
        self.lambda_span = lambda0  # λmax − λmin = 1.5·λ0 − 0.5·λ0

    def forward(self, h: torch.Tensor, lambda_phase: torch.Tensor) -> torch.Tensor:
        a = self.linear(h)
        delta = (torch.tanh(h) @ self.J) * torch.tanh(a)
        lam = torch.add(lambda_phase, torch.sigmoid(self.lambda_base), alpha=0.7 * self.lambda_span)
        return F.gelu(self.ln(torch.addcmul(a, lam, delta)))


class QBNNBranch(nn.Module):
    """The quantum half of the layered feed-forward: QBNN(E -> F) -> dropout -> QBNN(F -> E)."""

    def __init__(self, config: NeuroQConfig) -> None:
        super().__init__()
        self.up = QBNNLayer(config.embed_dim, config.hidden_dim, config.lambda_entangle)
        self.down = QBNNLayer(config.hidden_dim, config.embed_dim, config.lambda_entangle)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, lambda_phase: torch.Tensor, noise: bool) -> torch.Tensor:
        return self.down(self.dropout(self.up(x, lambda_phase)), lambda_phase)


class BrainLayer(nn.Module):
    """A small recurrent network of N sparsely connected neurons, applied to each token on its own.
    Per step: state = tanh(state·(Wᵣ⊙M) + λ·s⊙(s·(J⊙M)) [+ noise]), s = tanh(state).

    The connection mask M is drawn from `seed` (not the global RNG) so the wiring is a function of
    the config; it is a buffer, so checkpoints carry it. The noise ε·|sin 2θ|·0.1 is on in training
    and off at inference unless asked for.
    """

    def __init__(
        self, num_neurons: int, n_in: int, n_out: int, density: float, lam: float, seed: int
    ) -> None:
        super().__init__()
        self.input_proj = nn.Linear(n_in, num_neurons)
        self.output_proj = nn.Linear(num_neurons, n_out)
        self.theta = nn.Parameter(torch.empty(num_neurons).uniform_(0.25, 1.25))
        self.W_r = nn.Parameter(torch.randn(num_neurons, num_neurons) * 0.3)
        self.J = nn.Parameter(torch.randn(num_neurons, num_neurons) * 0.1)
        self.lam = nn.Parameter(torch.tensor(lam))
        wiring = torch.Generator().manual_seed(seed)
        mask = (torch.rand(num_neurons, num_neurons, generator=wiring) < density).float()
        mask.fill_diagonal_(0.0)
        self.mask: torch.Tensor
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor, noise: bool) -> torch.Tensor:
        state = self.input_proj(x)
        recurrent = self.W_r * self.mask
        entangle = self.J * self.mask
        for _ in range(BRAIN_TIME_STEPS):
            s = torch.tanh(state)
            pre = state @ recurrent + self.lam * s * (s @ entangle)
            if noise:
                amplitude = torch.sin(2 * self.theta).abs() * BRAIN_NOISE_SCALE
                pre = pre + torch.randn_like(pre) * amplitude
            state = torch.tanh(pre)
        return self.output_proj(state)


class BrainBranch(nn.Module):
    """The quantum half of the brain feed-forward: one brain of 2N neurons, E -> E."""

    def __init__(self, config: NeuroQConfig, layer: int) -> None:
        super().__init__()
        self.brain = BrainLayer(
            2 * config.num_neurons,
            config.embed_dim,
            config.embed_dim,
            BRAIN_FFN_DENSITY,
            BRAIN_FFN_LAMBDA,
            seed=_brain_seed(config, layer, 1),
        )

    def forward(self, x: torch.Tensor, lambda_phase: torch.Tensor, noise: bool) -> torch.Tensor:
        return self.brain(x, noise)


def _brain_seed(config: NeuroQConfig, layer: int, which: int) -> int:
    """A distinct, stable wiring seed per (config seed, layer, attention/ffn)."""
    return config.seed * 1_000 + 2 * layer + which


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention with the variant's query/key transform, one fused SDPA call and
    an optional KV cache.

    layered: score = q·k/√d + λ_attn·tanh(q)ᵀ J_h tanh(k). Written as one dot product of width 2d,
        [q, λ_attn·√d·tanh(q) J_h] · [k, tanh k] / √d, so SDPA computes it without a second S×S
        tensor, and the cache stores [k, tanh k] (and v zero-padded to 2d, see below).
    brain: q ← q + 0.1·brain(q), k ← k + 0.1·brain(k) with one shared brain (before the head
        split), then plain attention.
    """

    def __init__(self, config: NeuroQConfig, layer: int) -> None:
        super().__init__()
        E, H = config.embed_dim, config.num_heads
        self.n_head, self.head_dim = H, config.head_dim
        self.c_attn = nn.Linear(E, 3 * E)  # q, k, v projections in one matmul
        self.c_proj = nn.Linear(E, E)
        self.dropout = config.dropout
        self.layer = layer
        self.layered = config.mode == "layered"
        if self.layered:
            self.J = nn.Parameter(torch.randn(H, self.head_dim, self.head_dim) * 0.02)
            self.lambda_attn = nn.Parameter(torch.tensor(float(config.lambda_entangle)))
        else:
            self.brain = BrainLayer(
                config.num_neurons,
                E,
                E,
                BRAIN_ATTN_DENSITY,
                BRAIN_ATTN_LAMBDA,
                seed=_brain_seed(config, layer, 0),
            )

    def forward(
        self,
        x: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
        noise: bool,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        if not self.layered:
            q = q + 0.1 * self.brain(q, noise)
            k = k + 0.1 * self.brain(k, noise)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, d)
        k = k.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        if self.layered:
            correction = torch.tanh(q) @ self.J  # (B, H, T, d) @ (H, d, d)
            q = torch.cat([q, (self.lambda_attn * math.sqrt(self.head_dim)) * correction], dim=-1)
            k = torch.cat([k, torch.tanh(k)], dim=-1)  # (B, H, T, 2d)
            # SDPA's fused CPU/GPU kernels need one width for q, k and v: pad v with zeros to 2d
            # and drop the zero half of the output (about twice as fast as the generic path).
            v = F.pad(v, (0, self.head_dim))
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=attn_mask is None and T > 1,
            scale=1.0 / math.sqrt(self.head_dim),
        )
        if self.layered:
            y = y[..., : self.head_dim]
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    """The standard feed-forward half: Linear(E, F), GELU, dropout, Linear(F, E), dropout."""

    def __init__(self, config: NeuroQConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.embed_dim, config.hidden_dim)
        self.c_proj = nn.Linear(config.hidden_dim, config.embed_dim)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.dropout(F.gelu(self.c_fc(x)))))


class Block(nn.Module):
    """Pre-norm block; the feed-forward output blends the standard and quantum halves 0.7/0.3."""

    def __init__(self, config: NeuroQConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.embed_dim)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.embed_dim)
        self.mlp = MLP(config)
        self.quantum: QBNNBranch | BrainBranch = (
            QBNNBranch(config) if config.mode == "layered" else BrainBranch(config, layer)
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        lambda_phase: torch.Tensor,
        attn_mask: torch.Tensor | None,
        cache: KVCache | None,
        noise: bool,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_1(x), attn_mask, cache, noise))
        z = self.ln_2(x)
        # x + 0.7·mlp(z) + 0.3·quantum(z), in two fused ops
        return torch.add(x, self.mlp(z), alpha=0.7).add_(
            self.quantum(z, lambda_phase, noise), alpha=0.3
        )


class NeuroQ(nn.Module):
    def __init__(self, config: NeuroQConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.embed_dim)
        self.wpe = nn.Embedding(config.max_seq_len, config.embed_dim)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.ln_f = nn.LayerNorm(config.embed_dim)
        # Untied, as in the original: the head and the token embedding learn separately.
        self.lm_head = nn.Linear(config.embed_dim, config.vocab_size, bias=False)
        # Eval-mode phase per position, φ(t) = 0.5 + 0.5·sin(0.2·t), and the λ_eff part it sets,
        # λmin + 0.3·(λmax − λmin)·φ = 0.5·λ0 + 0.3·λ0·φ; derived, so not saved.
        t = torch.arange(config.max_seq_len, dtype=torch.float32)
        phase = 0.5 + 0.5 * torch.sin(PHASE_FREQUENCY * t)
        lam0 = config.lambda_entangle
        self.lambda_phase_table: torch.Tensor
        self.register_buffer(
            "lambda_phase_table", 0.5 * lam0 + 0.3 * lam0 * phase, persistent=False
        )
        # N(0, 0.02²) for every linear and embedding, zero biases, no depth scaling.
        # The QBNN/brain tensors (J, λ, Wᵣ, θ) were initialised by their own modules.
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        last_only: bool = False,
        noise: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) for token ids `idx` (B, T), and the loss if `targets` is given.

        The loss is the mean cross-entropy over all positions whose target is not PAD (id 0).
        Without a cache the window's positions are 0…T−1 and attention is causal. With a cache,
        `idx` continues the cached sequence: positions and the padding mask come from the cache
        (so left-padded batches use each row's true positions). `last_only` computes the head for
        the last position only (generation). `noise` turns on the brain noise; by default it
        follows training mode.
        """
        T = idx.size(1)
        if cache is None:
            assert self.config.max_seq_len >= T, (
                f"sequence of length {T} exceeds max_seq_len {self.config.max_seq_len}"
            )
            pos = torch.arange(T, device=idx.device)  # (T,)
            attn_mask = None
        else:
            pos = cache.positions(T)  # (B, T)
            attn_mask = cache.attention_mask(T)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        # Dynamic λ (docs/model-engine.md, Decisions): φ = 0.5 in training, φ(t) of the token's
        # position in eval.
        if self.training:
            lam0 = self.config.lambda_entangle
            lambda_phase = torch.tensor(0.5 * lam0 + 0.3 * lam0 * 0.5, device=idx.device)
        else:
            lambda_phase = self.lambda_phase_table.index_select(0, pos.reshape(-1))
            lambda_phase = lambda_phase.view(*pos.shape, 1)
        use_noise = self.training if noise is None else noise
        for block in self.blocks:
            x = block(x, lambda_phase, attn_mask, cache, use_noise)
        if cache is not None:
            cache.advance(T)
        if last_only:
            x = x[:, -1:, :]  # LayerNorm and head act per position
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            # In float32 even when the logits come out of a bfloat16 autocast region.
            loss = F.cross_entropy(
                logits.reshape(-1, logits.size(-1)).float(),
                targets.reshape(-1),
                ignore_index=PAD_ID,
            )
        return logits, loss

    def make_cache(
        self, batch_size: int, capacity: int, pad: Sequence[int] | None = None
    ) -> KVCache:
        """An empty cache for `batch_size` rows of up to `capacity` tokens each; `pad[b]` is row
        b's left padding. The layered mode caches the fused attention's 2d-wide [k, tanh k] and
        v zero-padded to 2d (see CausalSelfAttention)."""
        cfg = self.config
        width = 2 * cfg.head_dim if cfg.mode == "layered" else cfg.head_dim
        return KVCache(
            cfg.num_layers,
            batch_size,
            cfg.num_heads,
            capacity,
            width,
            width,
            max_positions=cfg.max_seq_len,
            pad=pad,
            device=self.device,
            dtype=self.lm_head.weight.dtype,
        )

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: decay only matrices and embeddings (2-D and up), not biases,
        LayerNorm gains or the λ scalars (the original decayed everything; docs/model.md,
        Training)."""
        decay = [p for p in self.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    @torch.inference_mode()
    def generate_naive(
        self,
        ids: list[int],
        params: SamplingParams,
        stop_ids: tuple[int, ...] = (EOS_ID, USER_ID),
    ) -> list[int]:
        """Reference generation: re-run the whole window (the last `max_seq_len` tokens, positions
        from 0) through the modules for every new token, as the original did. Returns the
        generated ids without the stop token. The engine must produce the same tokens for the
        same seed."""
        assert ids, "generate_naive needs at least one prompt token"
        was_training = self.training
        self.eval()
        sampler = Sampler([params])
        seq = list(ids)
        out: list[int] = []
        for _ in range(params.max_length):
            window = torch.tensor([seq[-self.config.max_seq_len :]], device=self.device)
            logits, _ = self(window)
            token = sampler.sample(logits[:, -1, :], [0])[0]
            if params.stop_at_eos and token in stop_ids:
                break
            seq.append(token)
            out.append(token)
        self.train(was_training)
        return out
