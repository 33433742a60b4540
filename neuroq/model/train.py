"""Training loop for NeuroQ.

Data: every dialogue becomes `BOS <USER> user <ASSISTANT> reply EOS` (a fix: the original
concatenated texts without BOS/EOS, so its model never learned to stop). The ids of all training
dialogues form one stream, cut into windows of `seq_len + 1` tokens with stride `seq_len // 2`.
A seeded 5 % of the dialogues is held out and evaluated after every epoch.

Optimiser: AdamW with weight decay only on tensors of two or more dimensions (linear weights,
embeddings, the attention entanglement J). Biases, LayerNorm gains and the scalar λ's set offsets
and scales; decaying them toward zero only fights the normalisation (and for λ, shifts the
learned entanglement strength) without regularising capacity. Learning rate: linear warm-up then
cosine decay to 10 % of `lr`, computed from the global step, so resuming needs only the step.

Speed (bench/bench_model.py measures exactly `train_step`): the forward pass runs under bfloat16
autocast on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), where oneDNN's bf16 matmuls run
about twice as fast as MKL's float32 ones; weights, gradients and AdamW moments stay float32 and the
loss is computed in float32 (`precision="fp32"` turns autocast off). AdamW uses the fused kernel.
`keep_freed_memory` stops glibc from returning each step's activations to the kernel only to
page-fault them back in on the next step.

Determinism: the same seed, data and parameters give identical losses on the same machine:
parameters are initialised after `torch.manual_seed(seed)`, each epoch's window order comes from
its own generator seeded with (seed, epoch), and the torch RNG (dropout) is saved with the
optimizer state so a resumed run continues the same random stream.

Checkpoints are written atomically at the end of every epoch; `should_stop()` is polled before
every step and stops without writing, so the last complete epoch's checkpoint stays intact.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from neuroq.model.checkpoint import (
    load_checkpoint,
    load_optimizer_state,
    perplexity,
    save_checkpoint,
)
from neuroq.model.corpus import Dialogue, corpus_sha256
from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.tokenizer import Tokenizer

EVAL_FRACTION = 0.05
RNG_KEY = "__rng__.torch"
MIN_LR_RATIO = 0.1
PRECISIONS = ("auto", "bf16", "fp32")
GRAD_CLIP = 1.0
# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@dataclass(frozen=True)
class ProgressEvent:
    """One optimiser step; `loss` is that step's training loss."""

    epoch: int  # 1-based
    epochs: int
    step: int  # global, 1-based
    total_steps: int
    loss: float
    tokens_per_s: float
    lr: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    steps: int
    epochs: int  # completed epochs (in the saved checkpoint)
    train_loss: float | None
    eval_loss: float | None
    eval_perplexity: float | None
    tokens_per_s: float
    stopped: bool  # True when should_stop() ended the run early

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["out_dir"] = str(self.out_dir)
        return d


def split_dialogues(
    dialogues: Sequence[Dialogue], seed: int, fraction: float = EVAL_FRACTION
) -> tuple[list[Dialogue], list[Dialogue]]:
    """Seeded (train, held-out) split by dialogue; at least one held out when there are 2+."""
    order = list(range(len(dialogues)))
    random.Random(seed).shuffle(order)
    n_eval = round(len(dialogues) * fraction)
    if n_eval == 0 and len(dialogues) >= 2:
        n_eval = 1
    held = set(order[:n_eval])
    train = [d for i, d in enumerate(dialogues) if i not in held]
    held_out = [d for i, d in enumerate(dialogues) if i in held]
    return train, held_out


def encode_stream(dialogues: Sequence[Dialogue], tokenizer: Tokenizer) -> list[int]:
    ids: list[int] = []
    for d in dialogues:
        ids.extend(tokenizer.encode_dialogue(d.user, d.assistant))
    return ids


def make_windows(stream: Sequence[int], seq_len: int, stride: int) -> torch.Tensor:
    """(N, seq_len + 1) windows: inputs are [:, :-1], targets [:, 1:]."""
    n = len(stream)
    if n < seq_len + 1:
        return torch.empty((0, seq_len + 1), dtype=torch.long)
    t = torch.tensor(stream, dtype=torch.long)
    return t.unfold(0, seq_len + 1, stride).contiguous()


def lr_at(step: int, total_steps: int, lr: float, warmup_steps: int) -> float:
    """Learning rate for 0-based `step`: linear warm-up, then cosine down to MIN_LR_RATIO·lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def optimizer_tensors(
    model: torch.nn.Module, opt: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """AdamW state keyed by parameter name (`<name>.exp_avg` ...), plus the torch RNG state."""
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {RNG_KEY: torch.get_rng_state()}
    for p, state in opt.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                out[f"{names[id(p)]}.{key}"] = value
    return out


def restore_optimizer(
    model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    for name, p in model.named_parameters():
        state = {
            key.rsplit(".", 1)[1]: value.clone()
            for key, value in tensors.items()
            if key.rsplit(".", 1)[0] == name
        }
        if state:
            opt.state[p] = state
    if RNG_KEY in tensors:
        torch.set_rng_state(tensors[RNG_KEY])


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a training forward pass, None for plain float32.

    "auto" means bfloat16 on a CPU with native bf16 instructions (AVX512-BF16 or AMX; measured on
    this project's AMD EPYC: large model 1.76k -> 2.72k tokens/s) and float32 everywhere else, where
    bf16 would be emulated (CPUs without them) or is untested here (CUDA)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    native = device.type == "cpu" and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    )
    return torch.bfloat16 if native else None


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory for reuse instead of handing it back to the kernel.

    By default glibc returns freed blocks above a moving threshold (mmap'd chunks, the heap top)
    to the kernel, so every training step page-faults its activations back in: 29k faults per
    large-model step, 0.69 s/step against 0.59 s with this (2-vCPU VM). Allocations up to 32 MiB
    (glibc's maximum) then come from the heap, which is handed back only when more than 1 GiB
    lies free at its top. Process-wide and permanent; a no-op without glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    mallopt(_M_MMAP_THRESHOLD, 32 << 20)


def make_optimizer(model: NeuroQ, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW over `model.optimizer_groups`, fused (one kernel for all tensors, about twice as
    fast as the per-tensor loop on CPU) where torch supports it for the parameters' device."""
    groups = model.optimizer_groups(weight_decay)
    fused = model.device.type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), fused=fused or None)


def train_step(
    model: NeuroQ,
    opt: torch.optim.Optimizer,
    batch: torch.Tensor,
    autocast_dtype: torch.dtype | None,
) -> torch.Tensor:
    """One optimiser step on a (B, T + 1) batch of windows; returns the detached loss."""
    autocast = (
        torch.autocast(batch.device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else contextlib.nullcontext()
    )
    with autocast:
        _, loss = model(batch[:, :-1], batch[:, 1:])
    assert loss is not None
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()
    return loss.detach()


class TerminalProgress:
    """Training progress on stderr: a live tqdm bar on a terminal (steps of the whole run, the
    epoch, loss, tokens/s and learning rate), plain lines at most every `interval_s` elsewhere,
    so a log file gets a readable line every 10 s rather than a bar's redraws."""

    def __init__(self, stream: TextIO | None = None, interval_s: float | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval_s = interval_s if interval_s is not None else (0.1 if self.tty else 10.0)
        self._last = 0.0
        self._bar: tqdm[Any] | None = None

    def __call__(self, ev: ProgressEvent) -> None:
        stats = f"loss {ev.loss:.3f} {ev.tokens_per_s / 1000:.1f}k tok/s lr {ev.lr:.2e}"
        if self.tty:
            self._draw(ev, stats)
            return
        now = time.monotonic()
        final = ev.step == ev.total_steps
        if now - self._last < self.interval_s and not final:
            return
        self._last = now
        self.stream.write(f"epoch {ev.epoch}/{ev.epochs} {ev.step}/{ev.total_steps} {stats}\n")
        self.stream.flush()

    def _draw(self, ev: ProgressEvent, stats: str) -> None:
        bar = self._bar
        if bar is None:
            # A resumed run's bar starts at the checkpoint's step; tqdm throttles its redraws.
            bar = self._bar = tqdm(
                total=ev.total_steps,
                initial=ev.step - 1,
                file=self.stream,
                mininterval=self.interval_s,
                dynamic_ncols=True,
                unit="step",
            )
        bar.set_description_str(f"epoch {ev.epoch}/{ev.epochs}", refresh=False)
        bar.set_postfix_str(stats, refresh=False)
        bar.update(ev.step - bar.n)
        if ev.step == ev.total_steps:
            self.close()

    def message(self, text: str) -> None:
        """A line of its own, above the bar while one is drawn."""
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
            return
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar (the run finished or stopped), leaving its last state on screen."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@torch.no_grad()
def evaluate(model: NeuroQ, stream: Sequence[int], seq_len: int, batch_size: int) -> float | None:
    """Mean token cross-entropy over non-overlapping windows (the tail as one shorter window)."""
    if len(stream) < 2:
        return None
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    full = make_windows(stream, seq_len, seq_len)
    for i in range(0, len(full), batch_size):
        batch = full[i : i + batch_size].to(device)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        n = batch[:, 1:].numel()
        total += float(loss) * n
        count += n
    covered = len(full) * seq_len
    tail = list(stream[covered:])
    if len(tail) >= 2:
        t = torch.tensor([tail], dtype=torch.long, device=device)
        _, loss = model(t[:, :-1], t[:, 1:])
        total += float(loss) * (len(tail) - 1)
        count += len(tail) - 1
    model.train(was_training)
    return total / count if count else None


def train(
    dialogues: Sequence[Dialogue],
    config: NeuroQConfig | None,
    tokenizer: Tokenizer | None,
    *,
    epochs: int,
    out_dir: str | Path,
    batch_size: int = 16,
    lr: float = 1e-3,
    seq_len: int = 64,
    seed: int = 0,
    weight_decay: float = 0.01,
    warmup_steps: int | None = None,
    resume: bool = False,
    init_from: str | Path | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    terminal: TerminalProgress | None = None,
    extra_meta: dict[str, Any] | None = None,
    precision: str = "auto",
) -> TrainResult:
    """Train (or, with `resume`, continue training) a model and checkpoint it into `out_dir`.

    `epochs` is the total: resuming a checkpoint that has 3 epochs with `epochs=5` runs 2 more.
    With `resume`, the checkpoint's config and tokenizer are used and `config`/`tokenizer` are
    ignored. `init_from` is a checkpoint directory to fine-tune: its weights, config and
    tokenizer are the starting point (not `config`/`tokenizer`), with a fresh optimizer and
    schedule, and `out_dir` gets the result. `progress` receives a `ProgressEvent` after every
    step (throttle it on the receiving side); `terminal` shows progress (None: on stderr, a bar
    on a terminal; pass `TerminalProgress(io)` to redirect). `precision` is "auto" (bfloat16
    autocast on CPUs with native bf16, else float32), "bf16" or "fp32" (see
    `resolve_precision`). Returns the figures also stored in the checkpoint's meta.json.
    """
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("seq_len", seq_len)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    out = Path(out_dir)
    term = terminal if terminal is not None else TerminalProgress()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    autocast_dtype = resolve_precision(precision, dev)
    keep_freed_memory()

    start_step = 0
    start_epoch = 0
    rng_tensors: dict[str, torch.Tensor] | None = None
    if resume and init_from is not None:
        raise ValueError("init_from: cannot be combined with resume (resume continues out_dir)")
    if init_from is not None:
        model, tokenizer, _ = load_checkpoint(init_from, device=dev)
        config = model.config
        torch.manual_seed(seed)  # dropout draws, as for a fresh model
    elif resume:
        model, tokenizer, meta = load_checkpoint(out, device=dev)
        config = model.config
        start_step = int(meta.get("steps", 0))
        start_epoch = int(meta.get("epochs", 0))
        rng_tensors = load_optimizer_state(out)
        if int(meta.get("seq_len", seq_len)) != seq_len:
            raise ValueError(
                f"seq_len {seq_len} differs from the checkpoint's {meta['seq_len']}; "
                "resume with the same seq_len"
            )
    else:
        if config is None or tokenizer is None:
            raise ValueError("config and tokenizer are required unless resume=True")
        if config.vocab_size != tokenizer.vocab_size:
            raise ValueError(
                f"vocab_size: config has {config.vocab_size}, tokenizer has {tokenizer.vocab_size}"
            )
        torch.manual_seed(seed)
        model = NeuroQ(config).to(dev)
    assert config is not None and tokenizer is not None
    max_len = _max_seq_len(config)
    if max_len is not None and seq_len > max_len:
        raise ValueError(f"seq_len {seq_len} exceeds the model's max_seq_len {max_len}")

    train_set, held_out = split_dialogues(dialogues, seed)
    windows = make_windows(encode_stream(train_set, tokenizer), seq_len, max(1, seq_len // 2))
    if len(windows) == 0:
        raise ValueError(
            f"corpus: the training part has fewer than seq_len + 1 = {seq_len + 1} tokens; "
            "use more data or a smaller seq_len"
        )
    eval_stream = encode_stream(held_out, tokenizer)
    steps_per_epoch = math.ceil(len(windows) / batch_size)
    total_steps = steps_per_epoch * epochs
    warmup = warmup_steps if warmup_steps is not None else min(100, max(1, total_steps // 20))

    opt = make_optimizer(model, lr, weight_decay)
    if rng_tensors is not None:
        restore_optimizer(model, opt, rng_tensors)

    base_meta: dict[str, Any] = {
        "corpus_sha256": corpus_sha256(dialogues),
        "corpus_records": len(dialogues),
        "train_windows": len(windows),
        "held_out_records": len(held_out),
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "seq_len": seq_len,
        "weight_decay": weight_decay,
        "precision": "bf16" if autocast_dtype is not None else "fp32",
        "total_epochs": epochs,
        **(extra_meta or {}),
    }
    term.message(
        f"training {sum(p.numel() for p in model.parameters()):,} parameters on "
        f"{len(windows)} windows ({steps_per_epoch} steps/epoch), "
        f"{len(held_out)} held-out dialogues ({len(eval_stream)} tokens)"
    )

    step = start_step
    train_loss: float | None = None
    eval_loss: float | None = None
    tokens_per_s = 0.0
    done_epochs = start_epoch
    stopped = False
    model.train()
    for epoch in range(start_epoch, epochs):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(windows), generator=gen)
        epoch_loss, epoch_batches, epoch_tokens = 0.0, 0, 0
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            if should_stop is not None and should_stop():
                stopped = True
                break
            batch = windows[order[b * batch_size : (b + 1) * batch_size]].to(dev)
            current_lr = lr_at(step, total_steps, lr, warmup)
            for group in opt.param_groups:
                group["lr"] = current_lr
            loss = train_step(model, opt, batch, autocast_dtype)
            step += 1
            loss_value = float(loss)
            epoch_loss += loss_value
            epoch_batches += 1
            epoch_tokens += batch[:, 1:].numel()
            tokens_per_s = epoch_tokens / max(1e-9, time.perf_counter() - t0)
            ev = ProgressEvent(
                epoch + 1, epochs, step, total_steps, loss_value, tokens_per_s, current_lr
            )
            term(ev)
            if progress is not None:
                progress(ev)
        if stopped:
            break
        done_epochs = epoch + 1
        train_loss = epoch_loss / max(1, epoch_batches)
        eval_loss = evaluate(model, eval_stream, seq_len, batch_size)
        model.train()
        meta = {
            **base_meta,
            "steps": step,
            "epochs": done_epochs,
            "train_loss": train_loss,
            "eval_loss": eval_loss,
            "eval_perplexity": perplexity(eval_loss) if eval_loss is not None else None,
            "tokens_per_s": round(tokens_per_s, 1),
        }
        save_checkpoint(out, model, tokenizer, meta, optimizer_tensors(model, opt))
        ev_text = (
            f"{eval_loss:.4f} (perplexity {perplexity(eval_loss):.2f})"
            if eval_loss is not None
            else "-"
        )
        term.message(
            f"epoch {done_epochs}/{epochs}: train loss {train_loss:.4f}, eval loss {ev_text}, "
            f"{tokens_per_s / 1000:.1f}k tokens/s, checkpoint {out}"
        )
    term.close()
    if stopped:
        term.message(f"stopped at step {step}; the checkpoint in {out} has {done_epochs} epochs")
        step = start_step + (done_epochs - start_epoch) * steps_per_epoch
    return TrainResult(
        out_dir=out,
        steps=step,
        epochs=done_epochs,
        train_loss=train_loss,
        eval_loss=eval_loss,
        eval_perplexity=perplexity(eval_loss) if eval_loss is not None else None,
        tokens_per_s=tokens_per_s,
        stopped=stopped,
    )


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _max_seq_len(config: NeuroQConfig) -> int | None:
    value = getattr(config, "max_seq_len", None)
    return int(value) if isinstance(value, int) else None
