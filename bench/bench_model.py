"""Model and engine throughput on the CPU: `python bench/bench_model.py` prints one JSON object.

For the original's two layered sizes (random weights, vocab 8000, 2 torch threads):
- generate: 80 new tokens from a 10-token prompt (the length of the prompt behind the reference
  figures below), stop rules off, so every call makes exactly 80 tokens; the KV-cached engine in
  each of `MODES` (decode-step weights fp32 / fp16 / int8, eager or compiled:
  `Engine(precision=..., compile=...)`; the first call, which compiles, is a warm-up) vs
  `generate_naive` (the original's full-recompute algorithm, float32), best of `--repeats`
  interleaved runs each (the same number for all, so none gets more chances at a quiet moment),
  and each mode's gain over naive;
- batching: 8 prompts of ragged lengths in one `Engine.generate` call vs 8 sequential calls;
- training: `neuroq.model.train.train_step` (what `neuroq train` runs: forward, backward, gradient
  clipping, fused AdamW) on 64-token windows, batch 16, tokens/s, with the default precision
  (bfloat16 autocast on CPUs with native bf16, else float32) and with float32, after
  `keep_freed_memory()` as `train()` calls it; training runs after every generation measurement,
  so the allocator setting does not touch the generation figures;
- training's baseline in the same run: the original's recipe (float32, PyTorch's default AdamW
  decaying every parameter) on the same model and step, and the default's gain over it;
- peak RSS of this process (both models, every decode mode, training), and of a fresh process
  that serves one reply with one model in the default mode (`generate_peak_rss_mb`).
Reference figures of the original on a similar machine: generate 504 tok/s (small) and
78 tok/s (large), training 14.8k tok/s (small) and 2.27k tok/s (large), peak RSS while
generating about 0.5 GB (small) and 1.0 GB (large).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuroq.model.engine import Engine
from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.sampling import SamplingParams
from neuroq.model.train import keep_freed_memory, make_optimizer, resolve_precision, train_step

VOCAB = 8000
NEW_TOKENS = 80
SIZES: dict[str, dict[str, Any]] = {
    "small": dict(embed_dim=64, hidden_dim=128, num_heads=4, num_layers=2, max_seq_len=128),
    "large": dict(embed_dim=256, hidden_dim=512, num_heads=8, num_layers=6, max_seq_len=256),
}
# The sampling settings behind the reference figures (module docstring), stop rules disabled.
PARAMS = SamplingParams(
    max_length=NEW_TOKENS,
    temp_min=0.56,
    temp_max=0.84,
    top_k=40,
    top_p=0.9,
    repetition_penalty=2.5,
    seed=0,
    stop_at_eos=False,
)


# KV-cached generation modes: name -> (Engine precision, compile).
MODES = {
    "cached": ("fp32", False),
    "cached_fp16": ("fp16", False),
    "cached_int8": ("int8", False),
    "cached_compiled": ("fp32", True),
    "cached_fp16_compiled": ("fp16", True),
    "cached_int8_compiled": ("int8", True),
}


class IdTokenizer:
    """Prompts are space-separated ids, so the bench controls prompt lengths exactly."""

    vocab_size = VOCAB

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in text.split()]

    def decode(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def prompt_text(n: int, offset: int = 0) -> str:
    """A prompt whose wrapped form (BOS <USER> ... <ASSISTANT>) is n + 3 tokens."""
    return " ".join(str(6 + (offset * 37 + i * 101) % (VOCAB - 6)) for i in range(n))


def best_of(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_generate(model: NeuroQ, repeats: int) -> dict[str, Any]:
    engines = {
        name: Engine(model, IdTokenizer(), device="cpu", precision=precision, compile=compile)
        for name, (precision, compile) in MODES.items()
    }
    engine = engines["cached"]
    prompt = prompt_text(7)  # 10 tokens once wrapped, like 'ChatGPTについて教えて'
    ids = engine.prompt_ids(prompt)

    def cached(engine: Engine) -> None:
        (result,) = engine.generate([prompt], PARAMS)
        assert result.num_tokens == NEW_TOKENS

    def naive() -> None:
        assert len(model.generate_naive(ids, PARAMS)) == NEW_TOKENS

    for name, e in engines.items():  # warm-up; compiles the compiled modes' steps
        started = time.perf_counter()
        cached(e)
        print(f"{name}: first call {time.perf_counter() - started:.1f} s", file=sys.stderr)
    naive()
    # Interleaved, so a noisy stretch of the shared machine hits every mode alike.
    best = dict.fromkeys([*engines, "naive"], float("inf"))
    for _ in range(repeats):
        for name, e in engines.items():
            best[name] = min(best[name], best_of(lambda e=e: cached(e), 1))
        best["naive"] = min(best["naive"], best_of(naive, 1))
    report: dict[str, Any] = {
        "naive_tok_s": round(NEW_TOKENS / best["naive"], 1),
        "naive_ms_per_token": round(1000 * best["naive"] / NEW_TOKENS, 3),
    }
    for name in engines:
        report[f"{name}_tok_s"] = round(NEW_TOKENS / best[name], 1)
        report[f"{name}_ms_per_token"] = round(1000 * best[name] / NEW_TOKENS, 3)
        report[f"{name}_gain"] = round(best["naive"] / best[name], 2)

    prompts = [prompt_text(4 + 3 * i, offset=i) for i in range(8)]  # 7 to 28 tokens wrapped
    params = [SamplingParams(**{**PARAMS.to_dict(), "seed": i}) for i in range(8)]

    def batched() -> None:
        results = engine.generate(prompts, params)
        assert all(r.num_tokens == NEW_TOKENS for r in results)

    def sequential() -> None:
        for p, sp in zip(prompts, params, strict=True):
            engine.generate([p], sp)

    batched()
    t_batched = best_of(batched, repeats)
    t_sequential = best_of(sequential, repeats)
    return {
        **report,
        "batch8_tok_s": round(8 * NEW_TOKENS / t_batched, 1),
        "sequential8_tok_s": round(8 * NEW_TOKENS / t_sequential, 1),
        "batch_speedup": round(t_sequential / t_batched, 2),
    }


def bench_train(model: NeuroQ, steps: int, precision: str) -> float:
    """Training tokens/s of `train_step` with a fresh optimiser (the model's weights change).

    precision "reference" is the original's recipe (docs/model-engine.md, Benchmark) on the same
    model and step: float32, and PyTorch's default AdamW over every parameter (weight decay 0.01
    on all, default betas, the per-tensor loop on a CPU), so training has a baseline measured on
    the same machine in the same run, like generation's naive path. It reproduces the original's
    recipe, not its code: what it measures is what our precision and optimiser choices gain."""
    model.train()
    if precision == "reference":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            model.parameters(), lr=1e-3, weight_decay=0.01
        )
        autocast_dtype = None
    else:
        optimizer = make_optimizer(model, lr=1e-3, weight_decay=0.01)
        autocast_dtype = resolve_precision(precision, model.device)
    gen = torch.Generator().manual_seed(0)
    batch, seq = 16, 64

    def step() -> None:
        train_step(
            model,
            optimizer,
            torch.randint(6, VOCAB, (batch, seq + 1), generator=gen),
            autocast_dtype,
        )

    for _ in range(3):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    model.eval()
    return round(steps * batch * seq / elapsed, 0)


def generate_peak_rss(size: str) -> float | None:
    """Peak RSS (MB) of a fresh process that builds one model and makes one 80-token reply with
    the default engine (float32, eager): what serving one model costs, without this process's
    other models, decode modes and training state. Linux only (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    code = (
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
        "import bench_model as b\n"
        f"torch.set_num_threads({torch.get_num_threads()})\n"
        f"model = b.NeuroQ(b.NeuroQConfig(vocab_size=b.VOCAB, **b.SIZES[{size!r}])).eval()\n"
        "engine = b.Engine(model, b.IdTokenizer(), device='cpu')\n"
        "(result,) = engine.generate([b.prompt_text(7)], b.PARAMS)\n"
        "assert result.num_tokens == b.NEW_TOKENS\n"
        # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's RSS (the fork).
        "print(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return round(int(out.stdout.split()[-1]) / 1024, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement")
    parser.add_argument("--train-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    report: dict[str, Any] = {
        "command": "python bench/bench_model.py",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "new_tokens": NEW_TOKENS,
        "vocab_size": VOCAB,
    }
    models = {}
    for name, shape in SIZES.items():
        model = models[name] = NeuroQ(NeuroQConfig(vocab_size=VOCAB, **shape)).eval()
        report[name] = {"params": model.num_params(), **bench_generate(model, args.repeats)}
    keep_freed_memory()
    default = resolve_precision("auto", torch.device("cpu"))
    for name, model in models.items():
        row = report[name]
        row["train_precision"] = "bf16" if default is not None else "fp32"
        row["train_tok_s"] = bench_train(model, args.train_steps, "auto")
        row["train_fp32_tok_s"] = bench_train(model, args.train_steps, "fp32")
        row["train_reference_tok_s"] = bench_train(model, args.train_steps, "reference")
        row["train_gain"] = round(row["train_tok_s"] / row["train_reference_tok_s"], 2)
        row["train_steps"] = args.train_steps
        row["generate_peak_rss_mb"] = generate_peak_rss(name)
    # ru_maxrss is in KiB on Linux.
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
