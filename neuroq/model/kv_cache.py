"""The KV cache that `NeuroQ.forward` continues (`cache=`); `NeuroQ.make_cache` sizes one for a
model. The decode step (decode.py) reads it through `step_inputs` and hands back its new keys and
values for `store_step`, so the step itself writes nothing in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class KVCache:
    """Keys and values of every layer for a batch of rows, filled left to right.

    Slots are shared by the batch; row b's first `pad[b]` slots are padding, never attended to,
    and its token in slot s sits at position s − pad[b]. For the layered mode the keys are the
    2d-wide [k, tanh k] of the fused attention and the values are zero-padded to the same width.
    """

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        capacity: int,
        key_dim: int,
        value_dim: int,
        *,
        max_positions: int,
        pad: Sequence[int] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        shape = (num_layers, batch_size, num_heads, capacity)
        self.k = torch.zeros(*shape, key_dim, device=device, dtype=dtype)
        self.v = torch.zeros(*shape, value_dim, device=device, dtype=dtype)
        self.length = 0  # slots filled
        self.capacity = capacity
        self.max_positions = max_positions
        self.device = torch.device(device)
        self.slots = torch.arange(capacity, device=device)
        self.pad: torch.Tensor | None = None
        self.min_pad = 0  # the position of slot s is at most s - min_pad
        self.key_valid: torch.Tensor | None = None  # (B, capacity) bool, None: no padding
        # The packed weights that filled it (set by engine.py's ModelRunner): its later decode steps
        # may use them without checking the model's parameters again.
        self.weights: object = None
        if pad is not None and any(pad):
            self.pad = torch.tensor(list(pad), device=device)
            self.min_pad = min(pad)
            self.key_valid = self.slots.unsqueeze(0) >= self.pad.unsqueeze(1)

    @property
    def batch_size(self) -> int:
        return self.k.size(1)

    def positions(self, T: int) -> torch.Tensor:
        """Positions (B, T) of the next T tokens; padding slots get 0 (their output is unused)."""
        end = self.length + T
        assert end <= self.capacity, (
            f"cache overflow: {self.length} + {T} slots > capacity {self.capacity}"
        )
        assert end - 1 - self.min_pad < self.max_positions, (
            f"position {end - 1 - self.min_pad} beyond max_seq_len {self.max_positions}"
        )
        slots = self.slots[self.length : end].unsqueeze(0)
        if self.pad is None:
            return slots.expand(self.batch_size, T)
        return (slots - self.pad.unsqueeze(1)).clamp(min=0)

    def attention_mask(self, T: int) -> torch.Tensor | None:
        """Boolean mask (B or 1, 1, T, length + T) for the next T queries, or None when every
        cached key is visible and the queries need no causal mask (SDPA is then fastest)."""
        total = self.length + T
        if self.key_valid is None and (T == 1 or self.length == 0):
            return None  # one query sees all keys; a fresh prefill uses is_causal
        keys = torch.arange(total, device=self.device)
        queries = torch.arange(self.length, total, device=self.device).unsqueeze(1)
        causal = keys.unsqueeze(0) <= queries  # (T, total)
        if self.key_valid is None:
            return causal.view(1, 1, T, total)
        valid = self.key_valid[:, :total].unsqueeze(1)  # (B, 1, total)
        # A padding query has no valid key; letting it see itself avoids an all-masked row (NaN).
        mask = (causal.unsqueeze(0) & valid) | (keys.unsqueeze(0) == queries).unsqueeze(0)
        return mask.unsqueeze(1)

    def update(
        self, layer: int, k: torch.Tensor, v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new (B, H, T, ·) keys/values of `layer`; return all keys/values so far."""
        end = self.length + k.size(2)
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def step_inputs(
        self, value_width: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What a decode step (decode.py) reads: every layer's cached keys (L, B, H, n, ·), the
        first `value_width` columns of its values, and which slots each row may attend to
        ((B, n) bool; None when no row has padding)."""
        n = self.length
        visible = None if self.key_valid is None else self.key_valid[:, :n]
        return self.k[:, :, :, :n], self.v[:, :, :, :n, :value_width], visible

    def store_step(self, k: torch.Tensor, v: torch.Tensor) -> None:
        """Put one decode step's keys (L, B, H, ·) and values (L, B, H, width) in the next slot
        of every layer (values fill the leading columns; the cache's padding stays zero)."""
        assert self.length < self.capacity, f"cache overflow: capacity {self.capacity}"
        self.k[:, :, :, self.length] = k
        self.v[:, :, :, self.length, : v.size(-1)] = v

    def advance(self, T: int) -> None:
        self.length += T

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Drop every row not in `rows` (indices into the current batch), e.g. finished requests."""
        index = torch.tensor(list(rows), device=self.device)
        self.k = self.k.index_select(1, index)
        self.v = self.v.index_select(1, index)
        if self.pad is not None and self.key_valid is not None:
            self.pad = self.pad.index_select(0, index)
            self.min_pad = int(self.pad.min())
            self.key_valid = self.key_valid.index_select(0, index)
