"""ModelRegistry while a checkpoint is being swapped into place: between the swap's two renames
the name is missing, and a generate arriving then must wait for the new files, not fail with
"model not found" (nor, for `default`, fall back to the shipped model)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from neuroq.handler.models import ModelRegistry
from neuroq.handler.requests import Architecture

TINY = Architecture(embed_dim=16, hidden_dim=32, num_heads=2, num_layers=1, max_seq_len=32)


@pytest.mark.parametrize("name", ["mine", "default"])
def test_a_lookup_during_a_swap_waits_for_the_new_checkpoint(tmp_path: Path, name: str) -> None:
    registry = ModelRegistry(tmp_path, device="cpu")
    registry.init(name, "layered", TINY)
    target = registry.root / name
    aside = registry.root / f".old-{name}-test"
    os.replace(target, aside)  # the first rename of a swap; the second comes a little later
    finish = threading.Timer(0.2, os.replace, (aside, target))
    finish.start()
    try:
        engine = registry.engine(name)
    finally:
        finish.join()
    assert engine.model.config.embed_dim == 16  # ours, not the shipped default (64)
    assert registry.path(name) == target


def test_a_missing_model_without_a_swap_fails_at_once(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, device="cpu")
    registry.root.mkdir(parents=True)
    with pytest.raises(LookupError, match="no checkpoint named 'nope'"):
        registry.engine("nope")
