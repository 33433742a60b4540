"""`neuroq train`, `neuroq generate` and `neuroq tokenizer`.

Thin: parse and validate options, then call corpus/tokenizer/train/engine. Bad values end in a
click usage error that names the option; library errors (a corrupt checkpoint, a malformed
corpus line) are reported as `Error: ...` without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

MODES = ("layered", "brain")
#: sampling.MAX_LENGTH_CAP, restated so that `--help` needs no torch (a test holds them equal)
MAX_LENGTH_CAP = 150


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


@click.command()
@click.option(
    "--corpus",
    default="default",
    show_default=True,
    help="A .jsonl ({user, assistant} per line) or .txt file, or 'default' for the shipped corpus.",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(path_type=Path), help="Checkpoint directory."
)
@click.option("--mode", type=click.Choice(MODES), default="layered", show_default=True)
@click.option("--epochs", type=int, default=5, show_default=True, callback=_positive)
@click.option("--batch-size", type=int, default=16, show_default=True, callback=_positive)
@click.option("--lr", type=float, default=1e-3, show_default=True, callback=_positive)
@click.option("--seq-len", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=300),
    default=None,
    help="Tokenizer size (default 4000).",
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Use this tokenizer.model instead of training one on the corpus.",
)
@click.option("--resume", is_flag=True, help="Continue training the checkpoint in --out.")
@click.option("--embed-dim", type=int, default=None, callback=_positive)
@click.option("--hidden-dim", type=int, default=None, callback=_positive)
@click.option("--num-heads", type=int, default=None, callback=_positive)
@click.option("--num-layers", type=int, default=None, callback=_positive)
@click.option("--max-seq-len", type=int, default=None, callback=_positive)
@click.option("--num-neurons", type=int, default=None, callback=_positive, help="Brain mode.")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=None)
@click.option("--lambda-entangle", type=click.FloatRange(min=0.0), default=None)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads (default: torch's choice).",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "bf16", "fp32"]),
    default="auto",
    show_default=True,
    help="Forward-pass precision: auto = bfloat16 autocast on CPUs with native bf16, else fp32.",
)
def train(
    corpus: str,
    out_dir: Path,
    mode: str,
    epochs: int,
    batch_size: int,
    lr: float,
    seq_len: int,
    seed: int,
    vocab_size: int | None,
    tokenizer_path: Path | None,
    resume: bool,
    threads: int | None,
    precision: str,
    **model_options: Any,
) -> None:
    """Train a NeuroQ model and write a checkpoint directory."""
    import torch

    from neuroq.model.corpus import CorpusError, load_corpus
    from neuroq.model.model import NeuroQConfig
    from neuroq.model.tokenizer import DEFAULT_VOCAB_SIZE, Tokenizer, TokenizerError
    from neuroq.model.train import train as run_training

    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dialogues = load_corpus(corpus)
    except CorpusError as e:
        raise click.BadParameter(str(e), param_hint="--corpus") from e
    config = tokenizer = None
    if not resume:
        try:
            if tokenizer_path is not None:
                tokenizer = Tokenizer.load(tokenizer_path)
            else:
                tokenizer = _train_tokenizer(dialogues, vocab_size or DEFAULT_VOCAB_SIZE, seed)
        except TokenizerError as e:
            raise click.BadParameter(str(e), param_hint="--tokenizer/--vocab-size") from e
        overrides = {k: v for k, v in model_options.items() if v is not None}
        overrides["vocab_size"] = tokenizer.vocab_size
        try:
            if mode == "brain":
                config = NeuroQConfig.brain_defaults(**overrides)
            else:
                config = NeuroQConfig(mode="layered", **overrides)
        except ValueError as e:
            raise click.UsageError(f"model option {e}") from e
    try:
        result = run_training(
            dialogues,
            config,
            tokenizer,
            epochs=epochs,
            out_dir=out_dir,
            batch_size=batch_size,
            lr=lr,
            seq_len=seq_len,
            seed=seed,
            resume=resume,
            precision=precision,
            extra_meta={"corpus": str(corpus)},
        )
    except ValueError as e:
        raise click.ClickException(str(e)) from e
    click.echo(
        f"done: {result.epochs} epochs, {result.steps} steps, eval loss "
        f"{_fmt(result.eval_loss)}, perplexity {_fmt(result.eval_perplexity)}, "
        f"{result.tokens_per_s:,.0f} tokens/s -> {result.out_dir}"
    )


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _train_tokenizer(dialogues: Any, vocab_size: int, seed: int) -> Any:
    from neuroq.model.tokenizer import train_tokenizer

    texts = [t for d in dialogues for t in (d.user, d.assistant) if t]
    return train_tokenizer(texts, vocab_size, seed=seed)


@click.command()
@click.option("--corpus", default="default", show_default=True, help="Corpus file or 'default'.")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory for tokenizer.model.",
)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=300),
    default=None,
    help="Number of pieces (default 4000).",
)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def tokenizer(corpus: str, out_dir: Path, vocab_size: int | None, seed: int) -> None:
    """Train the SentencePiece tokenizer on a corpus."""
    from neuroq.model.corpus import CorpusError, load_corpus
    from neuroq.model.tokenizer import DEFAULT_VOCAB_SIZE

    try:
        dialogues = load_corpus(corpus)
    except CorpusError as e:
        raise click.BadParameter(str(e), param_hint="--corpus") from e
    tok = _train_tokenizer(dialogues, vocab_size or DEFAULT_VOCAB_SIZE, seed)
    path = tok.save(out_dir)
    click.echo(f"wrote {path} ({tok.vocab_size} pieces)")


@click.command()
@click.argument("prompt")
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="Checkpoint directory (default: the model shipped with the package).",
)
@click.option(
    "--max-length",
    type=int,
    default=100,
    show_default=True,
    help=f"Longest reply in tokens, 1-{MAX_LENGTH_CAP}.",
)
@click.option(
    "--temperature",
    type=float,
    default=0.7,
    show_default=True,
    help="Randomness, 0-10; 0 = greedy: always the most likely token (the seed does not matter).",
)
@click.option("--top-k", type=int, default=40, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--repetition-penalty", type=float, default=2.0, show_default=True)
@click.option("--seed", type=int, default=None, help="Make the output reproducible.")
@click.option("--stream", is_flag=True, help="Print the reply piece by piece as it is generated.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8"]),  # decode.PRECISIONS (torch loads lazily)
    default="fp32",
    show_default=True,
    help="Weights of the decode step's products: fp16/int8 are faster on large models and "
    "may change the reply.",
)
@click.option(
    "--compile",
    "compile_step",
    is_flag=True,
    help=(
        "Compile the decode step, and with int8 build its matrix kernel (needs a C++ compiler; "
        "a first run on a machine compiles for 10-60 s)."
    ),
)
def generate(
    prompt: str,
    checkpoint: Path | None,
    max_length: int,
    temperature: float,
    top_k: int,
    top_p: float,
    repetition_penalty: float,
    seed: int | None,
    stream: bool,
    precision: str,
    compile_step: bool,
) -> None:
    """Generate a reply to PROMPT."""
    from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, CheckpointError, load_checkpoint
    from neuroq.model.engine import Engine
    from neuroq.model.sampling import SamplingParams

    if temperature == 0:
        # Greedy: with one candidate left the draw is the most likely token; the sampler itself
        # has no temperature 0 (it divides by it).
        temperature, top_k = 1.0, 1
    try:
        params = SamplingParams(
            max_length=max_length,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
        )
    except ValueError as e:
        # SamplingParams errors start with the field name; show it as the option.
        field, _, why = str(e).partition(": ")
        raise click.BadParameter(why or str(e), param_hint="--" + field.replace("_", "-")) from e
    try:
        model, tok, _ = load_checkpoint(checkpoint or DEFAULT_CHECKPOINT)
    except CheckpointError as e:
        raise click.BadParameter(str(e), param_hint="--checkpoint") from e
    engine = Engine(model, tok, precision=precision, compile=compile_step)
    if stream:
        for piece in engine.stream(prompt, params):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        click.echo(engine.generate([prompt], params)[0].text)
