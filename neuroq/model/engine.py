"""Fast generation: a KV cache, batched prefill + one-token decode steps, and streaming.

`Engine` turns prompts into replies. Several prompts of different lengths run as one batch: they
are left-padded to a common length, the cache keeps each row's padding so attention never sees it,
and every token gets its true position, so a row's logits are those it would get alone. Each
request samples from its own generator (see sampling.py), which makes a batched request return the
same tokens as the same request run by itself.

Past `max_seq_len` the cache cannot continue (positions are learned and end there), so a row that
outgrows the window switches to what the original does: re-run its last `max_seq_len` tokens with
positions from 0 every step. `NeuroQ.generate_naive` does the same for every step, which is what
the tests compare against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import torch

from neuroq.model.decode import PRECISIONS
from neuroq.model.model import NeuroQ, default_device
from neuroq.model.sampling import Sampler, SamplingParams
from neuroq.model.tokenizer import ASSISTANT_ID, BOS_ID, EOS_ID, PAD_ID, USER_ID


class Tokenizer(Protocol):
    """What the engine needs from a tokenizer. Special ids are fixed: PAD 0, UNK 1, BOS 2, EOS 3,
    `<USER>` 4, `<ASSISTANT>` 5; `encode` adds none of them."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class StopReason(StrEnum):
    EOS = "eos"  #: the model produced EOS
    USER = "user"  #: the model started a new user turn (`<USER>`)
    LENGTH = "length"  #: `max_length` tokens were generated


@dataclass(frozen=True)
class GenerationResult:
    text: str  #: the reply only: the generated ids before the stop token, decoded
    token_ids: list[int]
    stop_reason: StopReason

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


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
        self.weights: object = None  # the model's packed weights that filled it (model.py)
        if pad is not None and any(pad):
            self.pad = torch.tensor(list(pad), device=device)
            self.min_pad = min(pad)
            self.key_valid = self.slots.unsqueeze(0) >= self.pad.unsqueeze(1)

    @classmethod
    def for_model(
        cls, model: NeuroQ, batch_size: int, capacity: int, pad: Sequence[int] | None = None
    ) -> KVCache:
        cfg = model.config
        d = cfg.head_dim
        return cls(
            cfg.num_layers,
            batch_size,
            cfg.num_heads,
            capacity,
            2 * d if cfg.mode == "layered" else d,
            2 * d if cfg.mode == "layered" else d,
            max_positions=cfg.max_seq_len,
            pad=pad,
            device=model.device,
            dtype=model.lm_head.weight.dtype,
        )

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


class IncrementalDecoder:
    """Turns a growing list of ids into text pieces without re-decoding the whole list each time.

    It decodes a short window (the ids since the previous piece plus the ones before it, for
    context), and emits the text that the new ids added; a piece ending in U+FFFD (an incomplete
    UTF-8 sequence of byte-fallback tokens) waits for the next id.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0
        self.read_offset = 0
        self.emitted: list[str] = []

    def push(self, token: int) -> str:
        self.ids.append(token)
        prefix = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(text) <= len(prefix) or text.endswith("\ufffd") or not text.startswith(prefix):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        piece = text[len(prefix) :]
        self.emitted.append(piece)
        return piece

    def finish(self) -> str:
        """The rest of the text; afterwards the pieces add up to `decode(ids)`."""
        final = self.tokenizer.decode(self.ids)
        done = "".join(self.emitted)
        # A tokenizer whose decode is not prefix-stable could break this; pieces already sent
        # cannot be taken back, so the stream then ends with what it has.
        rest = final[len(done) :] if final.startswith(done) else ""
        if rest:
            self.emitted.append(rest)
        return rest


@dataclass
class TextStream:
    """Iterator of text pieces for one request; `result` is set once it is exhausted."""

    _pieces: Iterator[str]
    result: GenerationResult | None = field(default=None)

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def __next__(self) -> str:
        return next(self._pieces)


@dataclass
class StepEvent:
    """What one decoding step did for one row of `Engine.steps`."""

    row: int  #: index of the prompt in the batch
    token: int | None  #: the new token, None when the step produced a stop token
    stop: StopReason | None  #: set on the row's last event


class Engine:
    """Generation for the handler and the CLI: prompts in, replies out.

    The prompt is wrapped as BOS `<USER>` prompt `<ASSISTANT>`; generation stops at EOS or
    `<USER>` (unless the request sets `stop_at_eos=False`) or after `max_length` tokens, and only
    the reply is returned. The model is moved to `device` (default: CUDA when present) and put in
    eval mode.
    """

    def __init__(
        self,
        model: NeuroQ,
        tokenizer: Tokenizer,
        device: torch.device | str | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}"
            )
        if not isinstance(compile, bool):
            raise ValueError(f"compile: expected true or false, got {compile!r}")
        self.precision = precision
        self.compile = compile
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(
                f"vocab_size: tokenizer has {tokenizer.vocab_size} ids, "
                f"model only {model.config.vocab_size}"
            )
        self.device = torch.device(device) if device is not None else default_device()
        if precision == "int8" and self.device.type != "cpu":
            # torch._weight_int8pack_mm has no CUDA kernel; fp16 is the fast choice there.
            raise ValueError(f"precision: int8 runs on the CPU only, not on {self.device.type}")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer

    def prompt_ids(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt: must be a non-empty string")
        return [BOS_ID, USER_ID, *self.tokenizer.encode(prompt), ASSISTANT_ID]

    def generate(
        self, prompts: Sequence[str], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[GenerationResult]:
        """Generate replies for all prompts in one batch; `params` is shared or one per prompt."""
        if isinstance(prompts, str):
            raise ValueError("prompts: expected a list of strings, got a single string")
        ids = [self.prompt_ids(p) for p in prompts]
        per_row = self._per_row_params(params, len(ids))
        tokens: list[list[int]] = [[] for _ in ids]
        reasons: list[StopReason] = [StopReason.LENGTH] * len(ids)
        for events in self.steps(ids, per_row):
            for event in events:
                if event.token is not None:
                    tokens[event.row].append(event.token)
                if event.stop is not None:
                    reasons[event.row] = event.stop
        return [
            GenerationResult(self.tokenizer.decode(t), t, r)
            for t, r in zip(tokens, reasons, strict=True)
        ]

    def stream(self, prompt: str, params: SamplingParams) -> TextStream:
        """Text pieces as tokens are generated; their concatenation is the final reply text,
        which (with the stop reason) is in `stream.result` once the iterator is exhausted."""
        ids = self.prompt_ids(prompt)  # validate before the first next()
        if not isinstance(params, SamplingParams):
            raise ValueError("params: expected SamplingParams")
        stream = TextStream(iter(()))
        stream._pieces = self._stream_pieces(ids, params, stream)
        return stream

    def _stream_pieces(
        self, ids: list[int], params: SamplingParams, stream: TextStream
    ) -> Iterator[str]:
        decoder = IncrementalDecoder(self.tokenizer)
        reason = StopReason.LENGTH
        for events in self.steps([ids], [params]):
            event = events[0]
            if event.token is not None:
                piece = decoder.push(event.token)
                if piece:
                    yield piece
            if event.stop is not None:
                reason = event.stop
        rest = decoder.finish()
        if rest:
            yield rest
        stream.result = GenerationResult("".join(decoder.emitted), decoder.ids, reason)

    @staticmethod
    def _per_row_params(
        params: SamplingParams | Sequence[SamplingParams], n: int
    ) -> list[SamplingParams]:
        if isinstance(params, SamplingParams):
            return [params] * n
        per_row = list(params)
        if len(per_row) != n or not all(isinstance(p, SamplingParams) for p in per_row):
            raise ValueError(f"params: expected one SamplingParams or a list of {n}")
        return per_row

    @torch.inference_mode()
    def steps(
        self, prompts: list[list[int]], params: list[SamplingParams]
    ) -> Iterator[list[StepEvent]]:
        """The batched loop under `generate` and `stream`, for callers that build their own id
        lists (e.g. a prompt with earlier turns): yields, per decoding step, one event for each
        row still running. Prompts must be non-empty; `params` has one entry per prompt."""
        if not prompts:
            return
        if len(params) != len(prompts) or not all(prompts):
            raise ValueError("prompts: expected non-empty id lists, one SamplingParams each")
        model = self.model
        P = model.config.max_seq_len
        sampler = Sampler(params)
        seqs = [list(p) for p in prompts]
        produced = [0] * len(seqs)

        cached = [r for r in range(len(seqs)) if len(seqs[r]) <= P]
        sliding = [r for r in range(len(seqs)) if len(seqs[r]) > P]
        cache, logits_cached = self._prefill(seqs, cached, params)
        logits_sliding = self._window_logits(seqs, sliding)

        while True:
            rows = cached + sliding
            if not sliding:
                logits = logits_cached
            elif not cached:
                logits = logits_sliding
            else:
                logits = torch.cat([logits_cached, logits_sliding])
            tokens = sampler.sample(logits, rows)
            events: list[StepEvent] = []
            next_cached: list[int] = []  # indices into `cached`, for the cache
            next_sliding: list[int] = []
            for i, (r, token) in enumerate(zip(rows, tokens, strict=True)):
                if params[r].stop_at_eos and token in (EOS_ID, USER_ID):
                    reason = StopReason.EOS if token == EOS_ID else StopReason.USER
                    events.append(StepEvent(r, None, reason))
                    continue
                seqs[r].append(token)
                produced[r] += 1
                if produced[r] >= params[r].max_length:
                    events.append(StepEvent(r, token, StopReason.LENGTH))
                elif i < len(cached) and len(seqs[r]) <= P:
                    events.append(StepEvent(r, token, None))
                    next_cached.append(i)
                else:
                    events.append(StepEvent(r, token, None))
                    next_sliding.append(r)
            yield events

            if next_cached:
                assert cache is not None
                if len(next_cached) != len(cached):
                    cache.keep_rows(next_cached)
                cached = [cached[i] for i in next_cached]
                last = torch.tensor([[seqs[r][-1]] for r in cached], device=self.device)
                logits_cached = model(
                    last,
                    cache=cache,
                    last_only=True,
                    precision=self.precision,
                    compile=self.compile,
                )[0][:, -1, :]
            else:
                cached, cache = [], None
                logits_cached = self._empty_logits()
            sliding = next_sliding
            logits_sliding = self._window_logits(seqs, sliding)
            if not cached and not sliding:
                return

    def _prefill(
        self, seqs: list[list[int]], rows: list[int], params: list[SamplingParams]
    ) -> tuple[KVCache | None, torch.Tensor]:
        """Run the prompts of `rows` (left-padded) into a fresh cache; last-position logits."""
        if not rows:
            return None, self._empty_logits()
        longest = max(len(seqs[r]) for r in rows)
        pad = [longest - len(seqs[r]) for r in rows]
        capacity = longest + max(params[r].max_length for r in rows)
        cache = KVCache.for_model(self.model, len(rows), capacity, pad=pad)
        idx = torch.tensor(
            [[PAD_ID] * p + seqs[r] for p, r in zip(pad, rows, strict=True)], device=self.device
        )
        logits, _ = self.model(idx, cache=cache, last_only=True)
        return cache, logits[:, -1, :]

    def _window_logits(self, seqs: list[list[int]], rows: list[int]) -> torch.Tensor:
        """Full recompute of the last max_seq_len tokens (all such windows have that length)."""
        if not rows:
            return self._empty_logits()
        P = self.model.config.max_seq_len
        idx = torch.tensor([seqs[r][-P:] for r in rows], device=self.device)
        return self.model(idx, last_only=True)[0][:, -1, :]

    def _empty_logits(self) -> torch.Tensor:
        return torch.empty(0, self.model.config.vocab_size, device=self.device)
