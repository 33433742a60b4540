"""The NeuroQ language model: model, engine, tokenizer, training and checkpoints.

Training is `neuroq.model.train.train` (a submodule of the same name would shadow a re-export).
Names are resolved lazily, so `import neuroq.model` stays cheap and torch is imported only when a
torch-backed name is first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "NeuroQ": "neuroq.model.model",
    "NeuroQConfig": "neuroq.model.model",
    "Engine": "neuroq.model.engine",
    "GenerationResult": "neuroq.model.engine",
    "SamplingParams": "neuroq.model.sampling",
    "Tokenizer": "neuroq.model.tokenizer",
    "TokenizerError": "neuroq.model.tokenizer",
    "train_tokenizer": "neuroq.model.tokenizer",
    "Dialogue": "neuroq.model.corpus",
    "CorpusError": "neuroq.model.corpus",
    "load_corpus": "neuroq.model.corpus",
    "ProgressEvent": "neuroq.model.train",
    "TrainResult": "neuroq.model.train",
    "CheckpointError": "neuroq.model.checkpoint",
    "DEFAULT_CHECKPOINT": "neuroq.model.checkpoint",
    "load_checkpoint": "neuroq.model.checkpoint",
    "save_checkpoint": "neuroq.model.checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'neuroq.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
