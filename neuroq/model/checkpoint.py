"""Checkpoints: a directory of tensors and JSON, never a pickle.

Layout (format version 1):

    model.safetensors      the model's state_dict
    config.json            NeuroQConfig.to_dict()
    tokenizer.model        the SentencePiece model
    meta.json              format_version, created, corpus_sha256, steps, epochs, losses, ...
    optimizer.safetensors  optional: AdamW moments and step per parameter, plus the torch RNG
                           state, so `train(resume=True)` continues exactly where it stopped

`load_checkpoint` validates every file against the others before returning a model, and each
mismatch raises `CheckpointError` naming the file and the expected and actual values. Loading
never calls `torch.load`, so a checkpoint cannot execute code.

Saving is atomic: everything is written into a temporary sibling directory, which then replaces
the target by rename, so a crash or a cancelled training run leaves the previous checkpoint whole.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.tokenizer import MODEL_FILE, Tokenizer, TokenizerError

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"
OPTIMIZER_FILE = "optimizer.safetensors"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, MODEL_FILE, META_FILE)

# The checkpoint that ships with the package; `neuroq generate` uses it when none is named.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "default"
#: a model name: one path segment, so no traversal is possible (matched whole, with fullmatch)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


class CheckpointError(ValueError):
    """A checkpoint directory is missing a file or its files disagree (the message says which)."""


def named_checkpoint(data_dir: str | Path, name: str) -> Path:
    """Where the model called `name` lives: `<data_dir>/checkpoints/<name>`, which the job
    handler and `neuroq generate --model` both serve. `default` is the shipped checkpoint until
    a trained copy exists there."""
    own = Path(data_dir) / "checkpoints" / name
    if name == DEFAULT_CHECKPOINT.name and not own.is_dir():
        return DEFAULT_CHECKPOINT
    return own


def remove_checkpoint(directory: str | Path) -> bool:
    """Delete a checkpoint directory; False if there was none. It is renamed aside first, so a
    reader sees the whole checkpoint or none (the handler waits out the aside name)."""
    target = Path(directory)
    if not target.is_dir():
        return False
    aside = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    os.replace(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return True


def save_checkpoint(
    directory: str | Path,
    model: NeuroQ,
    tokenizer: Tokenizer,
    meta: dict[str, Any],
    optimizer_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a checkpoint atomically; returns its directory.

    `meta` is stored as given plus `format_version` and `created` (when absent).
    """
    target = Path(directory)
    if model.config.vocab_size != tokenizer.vocab_size:
        raise CheckpointError(
            f"{MODEL_FILE}: tokenizer vocab_size {tokenizer.vocab_size} does not match "
            f"config vocab_size {model.config.vocab_size}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        _write_json(tmp / CONFIG_FILE, model.config.to_dict())
        tokenizer.save(tmp)
        full_meta = {"format_version": FORMAT_VERSION, "created": _utc_now(), **meta}
        full_meta["format_version"] = FORMAT_VERSION
        _write_json(tmp / META_FILE, full_meta)
        if optimizer_state is not None:
            state = {k: v.detach().to("cpu").contiguous() for k, v in optimizer_state.items()}
            save_file(state, str(tmp / OPTIMIZER_FILE))
        _make_readable(tmp)
        _fsync_dir(tmp)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap_into_place(tmp: Path, target: Path) -> None:
    # rename(2) cannot replace a non-empty directory, so move the old one aside first; the old
    # copy is deleted only after the new one is in place.
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _make_readable(directory: Path) -> None:
    # mkdtemp and safetensors create owner-only entries; a checkpoint is ordinary data, so give it
    # the modes a normal mkdir/open would (respecting the umask).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.iterdir():
        os.chmod(f, 0o666 & ~umask)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def read_meta(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    data = _read_json(path)
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version expected {FORMAT_VERSION}, found {version!r}"
        )
    return data


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data


def read_config(directory: str | Path) -> NeuroQConfig:
    path = Path(directory) / CONFIG_FILE
    data = _read_json(path)
    try:
        return NeuroQConfig.from_dict(data)
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: invalid config ({e})") from e


def load_checkpoint(
    directory: str | Path, device: str | torch.device | None = None
) -> tuple[NeuroQ, Tokenizer, dict[str, Any]]:
    """Load and validate a checkpoint; the model is returned in eval mode on `device` (CPU)."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: checkpoint directory not found")
    missing = [name for name in REQUIRED_FILES if not (d / name).is_file()]
    if missing:
        raise CheckpointError(f"{d}: missing {', '.join(missing)}")
    meta = read_meta(d)
    config = read_config(d)
    try:
        tokenizer = Tokenizer.load(d / MODEL_FILE)
    except TokenizerError as e:
        raise CheckpointError(f"{d / MODEL_FILE}: {e}") from e
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{d / MODEL_FILE}: vocab size {tokenizer.vocab_size} does not match "
            f"{CONFIG_FILE} vocab_size {config.vocab_size}"
        )
    model = NeuroQ(config)
    tensors = _read_tensors(d / WEIGHTS_FILE)
    _check_tensors(d / WEIGHTS_FILE, model.state_dict(), tensors)
    model.load_state_dict(tensors, strict=True)
    model.to(torch.device(device) if device is not None else torch.device("cpu"))
    model.eval()
    return model, tokenizer, meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from e


def _check_tensors(
    path: Path, expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]
) -> None:
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            extra = unexpected[:5]
            parts.append(f"unexpected tensors {extra}" + (" ..." if len(unexpected) > 5 else ""))
        raise CheckpointError(f"{path}: {'; '.join(parts)} for the model in {CONFIG_FILE}")
    for name, ref in expected.items():
        t = actual[name]
        if tuple(t.shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(t.shape)}, "
                f"expected {tuple(ref.shape)} from {CONFIG_FILE}"
            )
        if t.dtype != ref.dtype:
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {t.dtype}, expected {ref.dtype}"
            )


def load_optimizer_state(directory: str | Path) -> dict[str, torch.Tensor]:
    path = Path(directory) / OPTIMIZER_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (the checkpoint was not saved by training)")
    return _read_tensors(path)


def perplexity(loss: float) -> float:
    """exp(loss), saturating instead of overflowing for a diverged run."""
    return math.exp(loss) if loss < 700 else float("inf")
