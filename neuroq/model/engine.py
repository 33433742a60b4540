"""Fast generation: batched prefill + one-token decode steps on the fastest path, and streaming.

`ModelRunner` decides how the model runs: the module path of model.py, or for the layered mode
its packed weights (packed.py) and the decode step (decode.py), in the precision and with the
compilation the engine was given.

`Engine` turns prompts into replies. Several prompts of different lengths run as one batch: they
are left-padded to a common length, the cache keeps each row's padding so attention never sees it,
and every token gets its true position, so a row's logits are those it would get alone. Each
request samples from its own generator (see sampling.py), which makes a batched request return the
same tokens as the same request run by itself.

Past `max_seq_len` the cache cannot continue (positions are learned and end there), so a row that
outgrows the window switches to what the original does: re-run its last `max_seq_len` tokens with
positions from 0 every step. `NeuroQ.generate_naive` does the same for every step through the
plain modules, which is what the tests compare against.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import torch

from neuroq.model.decode import PRECISIONS, Decoder
from neuroq.model.kv_cache import KVCache
from neuroq.model.model import NeuroQ, default_device
from neuroq.model.packed import PackedLayered
from neuroq.model.sampling import Sampler, SamplingParams
from neuroq.model.tokenizer import ASSISTANT_ID, BOS_ID, EOS_ID, PAD_ID, USER_ID

# Reduced-precision weights pay off for matrix-vector work only: on the development CPU the large
# model's weight products of one decode step took 1.3 ms in float16 against 4.2 ms in float32 for
# one row, 3.6 against 7.6 ms for four, and the same for eight, where the casts made it slower.
REDUCED_MAX_ROWS = 4


class ModelRunner:
    """The model's forward as generation runs it: logits equal to `model(idx, cache=cache,
    last_only=...)[0]` up to float rounding (or, in the reduced precisions, close to them).

    For the layered mode in eval mode with gradients off it runs the packed weights (packed.py),
    and single-token cached steps through decode.py's step, with weights in `precision` ("fp16"
    and "int8" apply to batches of at most `REDUCED_MAX_ROWS` rows) and compiled if `compile`.
    Otherwise (the brain mode, training mode, autograd on) it runs the modules. The packed copy
    is made on first use and made again once any parameter has changed or been replaced, so
    generation never sees stale weights.
    """

    def __init__(self, model: NeuroQ) -> None:
        self.model = model
        self._packed: PackedLayered | None = None
        # decode.py's steps by (precision, compile), with their copies of the packed weights
        self._decoders: dict[tuple[str, bool], Decoder] = {}

    def __call__(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        *,
        last_only: bool = False,
        precision: str = "fp32",
        compile: bool = False,
    ) -> torch.Tensor:
        assert precision in PRECISIONS, f"precision: expected one of {PRECISIONS}"
        packed = self.packed(cache)
        if packed is None:
            return self.model(idx, cache=cache, last_only=last_only)[0]
        if cache is not None and idx.size(1) == 1:
            if idx.size(0) > REDUCED_MAX_ROWS:
                precision = "fp32"
            return self.decoder(precision, compile).step(idx, cache)
        return packed.forward(idx, cache, last_only)

    def packed(self, cache: KVCache | None = None) -> PackedLayered | None:
        """The packed weights when the forward may use them, else None.

        A cache remembers the packed weights that filled it, and while they are still this
        runner's copy its later steps use them without checking the parameters again (a check
        costs more than a tenth of a fast decode step): the cached keys and values belong to
        those weights anyway."""
        model = self.model
        if model.training or torch.is_grad_enabled() or model.config.mode != "layered":
            return None
        if cache is not None and self._packed is not None and cache.weights is self._packed:
            return self._packed
        if self._packed is None or not self._packed.is_current(model):
            # Plain tensors even under inference_mode, so later no_grad calls may use them.
            with torch.inference_mode(False):
                self._packed = PackedLayered(model)
            self._decoders = {}
        if cache is not None:
            cache.weights = self._packed
        return self._packed

    def decoder(self, precision: str, compile: bool) -> Decoder:
        """The decode step for the current packed weights (call `packed` first)."""
        assert self._packed is not None, "no packed weights yet"
        decoder = self._decoders.get((precision, compile))
        if decoder is None:
            with torch.inference_mode(False), torch.no_grad():
                decoder = Decoder(self._packed, precision, compile)
            self._decoders[(precision, compile)] = decoder
        return decoder


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
        self.runner = ModelRunner(self.model)
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
                logits_cached = self.runner(
                    last,
                    cache=cache,
                    last_only=True,
                    precision=self.precision,
                    compile=self.compile,
                )[:, -1, :]
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
        cache = self.model.make_cache(len(rows), capacity, pad=pad)
        idx = torch.tensor(
            [[PAD_ID] * p + seqs[r] for p, r in zip(pad, rows, strict=True)], device=self.device
        )
        logits = self.runner(idx, cache=cache, last_only=True)
        return cache, logits[:, -1, :]

    def _window_logits(self, seqs: list[list[int]], rows: list[int]) -> torch.Tensor:
        """Full recompute of the last max_seq_len tokens (all such windows have that length)."""
        if not rows:
            return self._empty_logits()
        P = self.model.config.max_seq_len
        idx = torch.tensor([seqs[r][-P:] for r in rows], device=self.device)
        return self.runner(idx, last_only=True)[:, -1, :]

    def _empty_logits(self) -> torch.Tensor:
        return torch.empty(0, self.model.config.vocab_size, device=self.device)
