"""Named checkpoints in the data directory, loaded lazily and shared by all jobs of a worker.

`<data_dir>/checkpoints/<name>/` holds each model the `init` and `train` actions wrote. The name
`default` falls back to the checkpoint shipped with the package until a user trains their own.
Loading happens in full before a model becomes visible, so a failed load leaves the previous one
serving (the original mutated module globals mid-request).

Training writes into a hidden staging directory and swaps it into place only when the run ends
normally; a cancelled or failed run deletes its staging directory, so the previous checkpoint of
that name stays whole and keeps serving.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neuroq.handler.requests import DEFAULT_MODE, DEFAULT_NAMES, Architecture, Text, TrainOptions
from neuroq.model.checkpoint import (
    CONFIG_FILE,
    DEFAULT_CHECKPOINT,
    META_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_checkpoint,
    read_config,
    save_checkpoint,
)
from neuroq.model.corpus import Dialogue, load_corpus
from neuroq.model.engine import Engine
from neuroq.model.model import NeuroQ, NeuroQConfig, default_device
from neuroq.model.tokenizer import MODEL_FILE, Tokenizer
from neuroq.model.train import ProgressEvent, TerminalProgress, TrainResult, train

log = logging.getLogger("neuroq.handler")

#: longest wait for a checkpoint that is being swapped into place (two renames, normally)
SWAP_WAIT_S = 5.0


class ModelNotFound(LookupError):
    """No checkpoint of that name exists yet."""


@dataclass
class _Loaded:
    stamp: tuple[str, int]
    engine: Engine


def build_config(mode: str, architecture: Architecture, vocab_size: int) -> NeuroQConfig:
    """A config from the request's model parameters. In layered mode `num_neurons` is the
    original's other name for `hidden_dim` (docs/handler.md, Actions); in brain mode it is the
    brain's neuron count."""
    values = architecture.overrides()
    values["vocab_size"] = vocab_size
    if mode == "brain":
        return NeuroQConfig.brain_defaults(**values)
    neurons = values.pop("num_neurons", None)
    if neurons is not None and "hidden_dim" not in values:
        values["hidden_dim"] = neurons
    return NeuroQConfig(mode="layered", **values)


def dialogues_from(texts: list[Text] | None) -> list[Dialogue]:
    """Request texts as training records; None means the shipped corpus."""
    if texts is None:
        return load_corpus("default")
    return [
        Dialogue(None, t) if isinstance(t, str) else Dialogue(t["user"], t["assistant"])
        for t in texts
    ]


class ModelRegistry:
    def __init__(
        self,
        data_dir: Path,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        self.root = data_dir / "checkpoints"
        self.device = device
        self.precision, self.compile = precision, compile  # the engines' decode step, see Engine
        self._loaded: dict[str, _Loaded] = {}
        self._load_lock = threading.Lock()
        self._train_locks: dict[str, threading.Lock] = {}

    def path(self, name: str) -> Path:
        own = self.root / name
        if name == DEFAULT_NAMES["layered"] and not own.is_dir() and not self._swapping(name):
            return DEFAULT_CHECKPOINT
        return own

    def _swapping(self, name: str) -> bool:
        """A new checkpoint of this name is being moved into place (by this or another worker):
        between its two renames the name is briefly missing, which must not read as "no such
        model" (nor, for `default`, as "use the shipped one")."""
        if not self.root.is_dir():
            return False
        asides = (f".old-{name}-*", f".{name}.old-*")  # the handler's and save_checkpoint's
        return any(next(self.root.glob(pattern), None) is not None for pattern in asides)

    def exists(self, name: str) -> bool:
        return (self.path(name) / CONFIG_FILE).is_file()

    def names(self) -> list[str]:
        found = {"default"} if DEFAULT_CHECKPOINT.is_dir() else set()
        if self.root.is_dir():
            # Staging and set-aside copies are hidden (a leading dot) and no model's name.
            found |= {
                p.name
                for p in self.root.iterdir()
                if not p.name.startswith(".") and (p / CONFIG_FILE).is_file()
            }
        return sorted(found)

    def describe(self, name: str) -> dict[str, Any]:
        """Cheap facts from the JSON files, without loading any weights."""
        path = self.path(name)
        try:
            config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelNotFound(f"model: no usable checkpoint named {name!r} ({exc})") from exc
        return {
            "name": name,
            "mode": config.get("mode"),
            "vocab_size": config.get("vocab_size"),
            "epochs": meta.get("epochs", 0),
            "trained": bool(meta.get("epochs")),
            "created": meta.get("created"),
            "loaded": name in self._loaded,
        }

    def loaded(self) -> list[str]:
        return sorted(self._loaded)

    def _stamp(self, name: str) -> tuple[str, int]:
        deadline = time.monotonic() + SWAP_WAIT_S
        while True:
            path = self.path(name)
            try:
                return str(path), (path / WEIGHTS_FILE).stat().st_mtime_ns
            except OSError as exc:
                if not self._swapping(name) or time.monotonic() > deadline:
                    raise ModelNotFound(f"model: no checkpoint named {name!r}") from exc
            time.sleep(0.005)

    def engine(self, name: str) -> Engine:
        """The engine for a checkpoint, loading it on first use or when the files changed (a
        train job of this or another worker replaced them). Blocking: call from a thread."""
        stamp = self._stamp(name)
        cached = self._loaded.get(name)
        if cached is not None and cached.stamp == stamp:
            return cached.engine
        with self._load_lock:
            cached = self._loaded.get(name)
            if cached is not None and cached.stamp == stamp:
                return cached.engine
            started = time.perf_counter()
            model, tokenizer, _ = load_checkpoint(self.path(name))
            engine = Engine(
                model,
                tokenizer,
                device=self.device,
                precision=self._precision(),
                compile=self.compile,
            )
            self._loaded[name] = _Loaded(stamp, engine)
            log.info("model %s loaded in %.2f s", name, time.perf_counter() - started)
            return engine

    def _precision(self) -> str:
        """The configured decode precision, except int8 on a GPU (its kernel is CPU-only),
        which becomes fp16 with a warning rather than failing every generate."""
        device = torch.device(self.device) if self.device is not None else default_device()
        if self.precision == "int8" and device.type != "cpu":
            log.warning("int8 decode steps run on the CPU only; using fp16 on %s", device.type)
            return "fp16"
        return self.precision

    def _base_tokenizer(self, name: str) -> Tokenizer:
        """The tokenizer a new model of this name gets: its own, else the shipped one's (so a
        fresh model needs no tokenizer training and its ids match the shipped corpus)."""
        path = self.path(name) / MODEL_FILE
        if not path.is_file():
            path = DEFAULT_CHECKPOINT / MODEL_FILE
        return Tokenizer.load(path)

    def init(self, name: str, mode: str, architecture: Architecture, seed: int = 0) -> NeuroQ:
        """Write a fresh, untrained model under `name` (replacing what was there)."""
        tokenizer = Tokenizer.load(DEFAULT_CHECKPOINT / MODEL_FILE)
        config = build_config(mode, architecture, tokenizer.vocab_size)
        torch.manual_seed(seed)
        model = NeuroQ(config)
        with self._train_lock(name):
            save_checkpoint(self.root / name, model, tokenizer, {"epochs": 0, "steps": 0})
        self._loaded.pop(name, None)
        return model

    def config(self, name: str) -> NeuroQConfig:
        """The architecture of an existing checkpoint (its config.json only)."""
        return read_config(self.path(name))

    def train_config(
        self, name: str, mode: str | None, architecture: Architecture
    ) -> tuple[NeuroQConfig, Tokenizer]:
        """Architecture for a train run: the existing model's (from `init` or an earlier train)
        unless the request changes the mode or gives model parameters; then fresh defaults."""
        tokenizer = self._base_tokenizer(name)
        if self.exists(name) and not architecture.overrides():
            existing = json.loads((self.path(name) / CONFIG_FILE).read_text(encoding="utf-8"))
            if mode is None or existing.get("mode") == mode:
                return NeuroQConfig.from_dict(existing), tokenizer
        return build_config(mode or DEFAULT_MODE, architecture, tokenizer.vocab_size), tokenizer

    def train(
        self,
        name: str,
        config: NeuroQConfig,
        tokenizer: Tokenizer,
        dialogues: list[Dialogue],
        options: TrainOptions,
        *,
        progress: Callable[[ProgressEvent], None],
        should_stop: Callable[[], bool],
        from_model: str | None = None,
    ) -> TrainResult:
        """Train into a staging directory; publish it as `name` only if the run completed.
        With `from_model`, training starts from that checkpoint's weights (fine-tuning) and
        `config`/`tokenizer` must be its own."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{name}-{uuid.uuid4().hex[:12]}"
        origin = {"from_model": from_model} if from_model is not None else {}
        try:
            result = train(
                dialogues,
                config,
                tokenizer,
                out_dir=staging,
                **options.train_kwargs(),
                device=self.device,
                progress=progress,
                should_stop=should_stop,
                terminal=TerminalProgress(io.StringIO()),
                init_from=self.path(from_model) if from_model is not None else None,
                extra_meta={"trained_by": "handler", **origin},
            )
            if not result.stopped:
                with self._train_lock(name):
                    _swap_into_place(staging, self.root / name)
            return result
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def reset(self, name: str) -> bool:
        """Delete the data directory's checkpoint `name`, so that a shipped model of that name
        serves again; False when there was none. Readers see the old files or, after a short
        wait, the shipped ones (the aside name is one `_swapping` knows)."""
        own = self.root / name
        with self._train_lock(name):
            if not own.is_dir():
                return False
            aside = self.root / f".old-{name}-{uuid.uuid4().hex[:12]}"
            os.replace(own, aside)
            shutil.rmtree(aside, ignore_errors=True)
        self._loaded.pop(name, None)
        return True

    def _train_lock(self, name: str) -> threading.Lock:
        return self._train_locks.setdefault(name, threading.Lock())


def _swap_into_place(new: Path, target: Path) -> None:
    """Replace directory `target` by `new` with renames: readers see the old or the new
    checkpoint, never a mix (a directory cannot be renamed over a non-empty one, hence the aside).
    """
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:12]}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


__all__ = ["DEFAULT_NAMES", "CheckpointError", "ModelNotFound", "ModelRegistry"]
