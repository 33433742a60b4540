"""`neuroq train`, `neuroq generate`, `neuroq tokenizer` and `neuroq model`.

Thin: parse and validate options, then call corpus/tokenizer/train/engine. Bad values end in a
click usage error that names the option; library errors (a corrupt checkpoint, a malformed
corpus line) are reported as `Error: ...` without a traceback.

Named models (`--model NAME`) live in `<data dir>/checkpoints/NAME`, where the job handler
serves them too; `default` is the shipped checkpoint until a trained copy is written there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from neuroq.client.connection import DATA_DIR_DEFAULT

MODES = ("layered", "brain")
#: sampling.MAX_LENGTH_CAP, restated so that `--help` needs no torch (a test holds them equal)
MAX_LENGTH_CAP = 150
#: tokenizer.DEFAULT_VOCAB_SIZE, restated for the same reason
DEFAULT_VOCAB_SIZE = 4000
#: NeuroQConfig's defaults as (layered, brain), restated for the same reason: what a new model
#: gets for an architecture option left out
ARCHITECTURE_DEFAULTS: dict[str, tuple[float, float]] = {
    "embed_dim": (64, 128),
    "hidden_dim": (128, 512),
    "num_heads": (4, 4),
    "num_layers": (2, 3),
    "max_seq_len": (128, 256),
    "num_neurons": (75, 75),
    "dropout": (0.1, 0.1),
    "lambda_entangle": (0.35, 0.35),
}


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where named models live, in checkpoints/NAME.  {DATA_DIR_DEFAULT}",
)


def _architecture_option(name: str, kind: click.ParamType, help: str) -> Any:
    """An option that shapes a new model, with its default per mode in the help."""
    layered, brain = ARCHITECTURE_DEFAULTS[name]
    default = f"{layered:g}" if layered == brain else f"{layered:g}, brain mode {brain:g}"
    callback = _positive if isinstance(kind, click.types.IntParamType) else None
    return click.option(
        "--" + name.replace("_", "-"),
        type=kind,
        default=None,
        callback=callback,
        help=f"{help}  [default: {default}]",
    )


def _data_dir(option: Path | None) -> Path:
    from neuroq.config import Settings

    return Settings.from_env(data_dir=option).data_dir


def _model_name(value: str, hint: str) -> str:
    from neuroq.model.checkpoint import NAME_RE

    if not NAME_RE.fullmatch(value):
        raise click.BadParameter(
            f"must be a model name of 1-64 characters A-Z a-z 0-9 _ - (no paths), got {value!r}",
            param_hint=hint,
        )
    return value


def _positive(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None and value <= 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


def _shown(name: str, kind: Any, default: Any, help: str, positive: bool = False) -> Any:
    """An option whose --help states its default as `[default: ...]`."""
    callback = _positive if positive else None
    return click.option(
        name, type=kind, default=default, show_default=True, callback=callback, help=help
    )


@click.command()
@click.option(
    "--corpus",
    default="default",
    show_default=True,
    help="A .jsonl ({user, assistant} per line) or .txt file, or 'default' for the shipped corpus.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    help="Checkpoint directory to write; give this or --model.",
)
@click.option(
    "--model",
    "model_name",
    default=None,
    help="Write the model NAME in the data directory instead of --out, where jobs and "
    "`neuroq generate --model NAME` find it.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Allow --model default, which replaces the model used when none is named.",
)
@click.option(
    "--from-model",
    default=None,
    help="Fine-tune this model (a name in the data directory, or a checkpoint directory): start "
    "from its weights, architecture and tokenizer.  [default: fresh weights]",
)
@data_dir_option
@_shown(
    "--mode",
    click.Choice(MODES),
    "layered",
    "Architecture of a new model; --resume and --from-model keep the checkpoint's.",
)
@_shown("--epochs", int, 5, "Epochs in all; with --resume, counting the checkpoint's.", True)
@_shown("--batch-size", int, 16, "Windows per optimiser step.", True)
@_shown(
    "--lr",
    float,
    1e-3,
    "Peak learning rate: linear warm-up to it, then cosine decay to a tenth of it.",
    True,
)
@_shown(
    "--seq-len",
    click.IntRange(min=2),
    64,
    "Tokens per training window, at most the model's --max-seq-len.",
)
@_shown(
    "--seed",
    click.IntRange(min=0),
    0,
    "Seeds the tokenizer, weights, held-out split, batch order and dropout: the same seed "
    "gives the same run.",
)
@click.option(
    "--vocab-size",
    type=click.IntRange(min=300),
    default=None,
    help=f"Pieces of the tokenizer trained on the corpus.  [default: {DEFAULT_VOCAB_SIZE}]",
)
@click.option(
    "--tokenizer",
    "tokenizer_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Use this tokenizer.model.  [default: train one on the corpus]",
)
@click.option("--resume", is_flag=True, help="Continue training the checkpoint in --out.")
@_architecture_option("embed_dim", click.INT, "Embedding width, a multiple of --num-heads.")
@_architecture_option("hidden_dim", click.INT, "Width of the feed-forward and QBNN layers.")
@_architecture_option("num_heads", click.INT, "Attention heads per layer.")
@_architecture_option("num_layers", click.INT, "Transformer layers.")
@_architecture_option("max_seq_len", click.INT, "Longest window the model sees at once.")
@_architecture_option("num_neurons", click.INT, "Neurons of the attention brain (brain mode).")
@_architecture_option(
    "dropout", click.FloatRange(0.0, 1.0, max_open=True), "Dropout rate while training."
)
@_architecture_option(
    "lambda_entangle", click.FloatRange(min=0.0), "QBNN entanglement strength (lambda0)."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="torch CPU threads.  [default: torch's choice]",
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
    out_dir: Path | None,
    model_name: str | None,
    overwrite: bool,
    from_model: str | None,
    data_dir: Path | None,
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
    """Train a NeuroQ model and write a checkpoint directory.

    The architecture options shape a new model; --resume and --from-model keep the
    checkpoint's. Progress shows on stderr: a live bar on a terminal, a line every 10 s
    otherwise.
    """
    import torch

    from neuroq.model.checkpoint import CONFIG_FILE, named_checkpoint
    from neuroq.model.corpus import CorpusError, load_corpus
    from neuroq.model.model import NeuroQConfig
    from neuroq.model.tokenizer import Tokenizer, TokenizerError
    from neuroq.model.train import train as run_training

    if (out_dir is None) == (model_name is None):
        raise click.UsageError("give either --out DIR or --model NAME")
    if model_name is not None:
        if _model_name(model_name, "--model") == "default" and not overwrite:
            raise click.BadParameter(
                "'default' is the model `neuroq generate` and jobs without a model use; name "
                "another model, or add --overwrite to replace it (`neuroq model reset default` "
                "brings the shipped one back)",
                param_hint="--model",
            )
        out_dir = _data_dir(data_dir) / "checkpoints" / model_name
    assert out_dir is not None
    init_from: Path | None = None
    if from_model is not None:
        given = [k for k, v in model_options.items() if v is not None]
        given += ["tokenizer"] * (tokenizer_path is not None) + ["vocab_size"] * bool(vocab_size)
        if given or resume:
            clash = "--" + (given[0] if given else "resume").replace("_", "-")
            raise click.BadParameter(
                f"fine-tuning keeps the model's architecture and tokenizer; leave out {clash}",
                param_hint="--from-model",
            )
        init_from = Path(from_model)
        if not init_from.is_dir():
            init_from = named_checkpoint(
                _data_dir(data_dir), _model_name(from_model, "--from-model")
            )
        if not (init_from / CONFIG_FILE).is_file():
            raise click.BadParameter(
                f"no model named {from_model!r} in the data directory, and no checkpoint "
                f"directory {str(init_from)!r}",
                param_hint="--from-model",
            )
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        dialogues = load_corpus(corpus)
    except CorpusError as e:
        raise click.BadParameter(str(e), param_hint="--corpus") from e
    config = tokenizer = None
    if not resume and init_from is None:
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
            init_from=init_from,
            precision=precision,
            extra_meta={
                "corpus": str(corpus),
                **({"from_model": from_model} if from_model else {}),
            },
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
@click.option(
    "--corpus",
    default="default",
    show_default=True,
    help="A .jsonl or .txt corpus file, or 'default' for the shipped corpus.",
)
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
    help=f"Number of pieces.  [default: {DEFAULT_VOCAB_SIZE}]",
)
@_shown(
    "--seed",
    click.IntRange(min=0),
    0,
    "SentencePiece's seed: the same seed and corpus give the same tokenizer.",
)
def tokenizer(corpus: str, out_dir: Path, vocab_size: int | None, seed: int) -> None:
    """Train the SentencePiece tokenizer on a corpus."""
    from neuroq.model.corpus import CorpusError, load_corpus

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
    "--model",
    "model_name",
    default=None,
    help="A model in the data directory.  [default: default, the shipped model unless a "
    "trained copy replaced it]",
)
@click.option(
    "--checkpoint",
    type=click.Path(path_type=Path),
    default=None,
    help="A checkpoint directory anywhere, instead of --model.",
)
@data_dir_option
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
@_shown("--top-k", int, 40, "Draw from the K most likely tokens only, 0-50; 0 = no limit.")
@_shown(
    "--top-p",
    float,
    0.9,
    "Draw from the fewest most likely tokens whose probabilities sum to P, in (0, 1]; "
    "1 = no limit.",
)
@_shown(
    "--repetition-penalty",
    float,
    2.0,
    "Make tokens already in the reply less likely, 1-10; 1 = no penalty.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Make the output reproducible.  [default: a fresh random seed per run]",
)
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
    model_name: str | None,
    checkpoint: Path | None,
    data_dir: Path | None,
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
    from neuroq.model.checkpoint import CheckpointError, load_checkpoint, named_checkpoint
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
    if checkpoint is not None and model_name is not None:
        raise click.UsageError("give either --model or --checkpoint")
    path, hint = checkpoint, "--checkpoint"
    if path is None:
        name = _model_name(model_name or "default", "--model")
        path, hint = named_checkpoint(_data_dir(data_dir), name), "--model"
        if not path.is_dir():
            raise click.BadParameter(
                f"no model named {name!r} in {path.parent} (`neuroq model list` shows them)",
                param_hint=hint,
            )
    try:
        model, tok, _ = load_checkpoint(path)
    except CheckpointError as e:
        raise click.BadParameter(str(e), param_hint=hint) from e
    engine = Engine(model, tok, precision=precision, compile=compile_step)
    if stream:
        for piece in engine.stream(prompt, params):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        click.echo(engine.generate([prompt], params)[0].text)


@click.group()
def model() -> None:
    """Named models in the data directory, which jobs and `neuroq generate --model` serve."""


@model.command("list")
@data_dir_option
def list_models(data_dir: Path | None) -> None:
    """Show each model's name, mode, epochs and directory.

    \b
    Examples:
      neuroq model list
      neuroq model list --data-dir /var/lib/neuroq
    """
    from neuroq.model.checkpoint import CONFIG_FILE, DEFAULT_CHECKPOINT, named_checkpoint

    root = _data_dir(data_dir) / "checkpoints"
    names = {DEFAULT_CHECKPOINT.name}
    if root.is_dir():
        names |= {p.name for p in root.iterdir() if not p.name.startswith(".")}
    for name in sorted(names):
        path = named_checkpoint(root.parent, name)
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not a complete checkpoint
        shipped = " (shipped)" if path.resolve() == DEFAULT_CHECKPOINT else ""
        click.echo(f"{name}\t{config.get('mode')}\t{meta.get('epochs', 0)} epochs\t{path}{shipped}")


@model.command()
@click.argument("name", default="default")
@data_dir_option
def reset(name: str, data_dir: Path | None) -> None:
    """Make NAME (default: 'default') the shipped model again by deleting its trained copy.

    Workers sharing the data directory serve the shipped model from their next job on.

    \b
    Example:
      neuroq model reset default
    """
    from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, remove_checkpoint

    if name != DEFAULT_CHECKPOINT.name:
        raise click.BadParameter(
            f"only {DEFAULT_CHECKPOINT.name!r} has a shipped version to go back to, not {name!r}",
            param_hint="NAME",
        )
    path = _data_dir(data_dir) / "checkpoints" / name
    if remove_checkpoint(path):
        click.echo(f"deleted {path}: {name!r} is the shipped model again")
    else:
        click.echo(f"{name!r} is already the shipped model (no {path})")
