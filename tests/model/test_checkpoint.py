"""Checkpoints: bit-exact round trip, atomic replacement, and a clear error for each bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from synthetic_corpus import build_synthetic

from neuroq.model.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.tokenizer import Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    texts = [t for d in build_synthetic(120, seed=5) for t in (d.user, d.assistant) if t]
    return train_tokenizer(texts, vocab_size=900)


def tiny_model(tok: Tokenizer, mode: str = "layered") -> NeuroQ:
    torch.manual_seed(1)
    cfg = NeuroQConfig(
        mode=mode,
        vocab_size=tok.vocab_size,
        embed_dim=16,
        hidden_dim=32,
        num_heads=2,
        num_layers=1,
        max_seq_len=32,
        num_neurons=8,
    )
    return NeuroQ(cfg)


@pytest.fixture
def ckpt(tok: Tokenizer, tmp_path: Path) -> Path:
    return save_checkpoint(tmp_path / "ck", tiny_model(tok), tok, {"steps": 7, "epochs": 1})


@pytest.mark.parametrize("mode", ["layered", "brain"])
def test_round_trip_is_bit_exact(
    tok: Tokenizer, tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model(tok, mode)
    save_checkpoint(tmp_path / "ck", model, tok, {"steps": 3, "corpus_sha256": "ab"})

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load must not be used")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, tok2, meta = load_checkpoint(tmp_path / "ck")
    assert loaded.config == model.config
    assert not loaded.training
    saved, restored = model.state_dict(), loaded.state_dict()
    assert saved.keys() == restored.keys()
    for name, tensor in saved.items():
        assert restored[name].dtype == tensor.dtype, name
        assert torch.equal(restored[name], tensor), name
    assert tok2.serialized() == tok.serialized()
    assert meta["steps"] == 3 and meta["corpus_sha256"] == "ab"
    assert meta["format_version"] == 1 and meta["created"].endswith("Z")


def test_save_replaces_atomically(tok: Tokenizer, ckpt: Path) -> None:
    save_checkpoint(ckpt, tiny_model(tok), tok, {"steps": 8})
    _, _, meta = load_checkpoint(ckpt)
    assert meta["steps"] == 8
    # No temporary or old copies are left beside it.
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["ck"]


def test_failed_save_keeps_previous(tok: Tokenizer, ckpt: Path) -> None:
    before = (ckpt / "model.safetensors").read_bytes()
    other = train_tokenizer(["just a few words here"] * 3, vocab_size=400)
    with pytest.raises(CheckpointError, match="vocab_size"):
        save_checkpoint(ckpt, tiny_model(tok), other, {})
    assert (ckpt / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    "name", ["model.safetensors", "config.json", "tokenizer.model", "meta.json"]
)
def test_missing_file(ckpt: Path, name: str) -> None:
    (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match=f"missing {name}"):
        load_checkpoint(ckpt)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint directory not found"):
        load_checkpoint(tmp_path / "nothing")


def test_wrong_tensor_shape(ckpt: Path) -> None:
    tensors = load_file(str(ckpt / "model.safetensors"))
    shape = tuple(tensors["lm_head.weight"].shape)
    tensors["lm_head.weight"] = torch.zeros(shape[0], shape[1] + 1)
    save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt)
    msg = str(e.value)
    assert "model.safetensors" in msg and "'lm_head.weight'" in msg
    assert f"{(shape[0], shape[1] + 1)}" in msg and f"expected {shape}" in msg


def test_missing_and_unexpected_tensors(ckpt: Path) -> None:
    tensors = load_file(str(ckpt / "model.safetensors"))
    del tensors["ln_f.weight"]
    tensors["extra.weight"] = torch.zeros(2)
    save_file(tensors, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['ln_f.weight'\].*extra.weight"):
        load_checkpoint(ckpt)


def test_vocab_mismatch(ckpt: Path, tok: Tokenizer) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config["vocab_size"] = tok.vocab_size + 10
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt)
    msg = str(e.value)
    assert "tokenizer.model" in msg and str(tok.vocab_size) in msg
    assert str(tok.vocab_size + 10) in msg


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"embed_dim": "wide"}, r"config.json: invalid config \(embed_dim"),
        ({"num_heads": 3}, r"config.json: invalid config \(embed_dim: must be divisible"),
        ({"colour": "blue"}, r"config.json: invalid config \(colour: unknown config key"),
        ({"mode": "quantum"}, r"config.json: invalid config \(mode"),
    ],
)
def test_bad_config(ckpt: Path, edit: dict[str, object], message: str) -> None:
    config = json.loads((ckpt / "config.json").read_text())
    config.update(edit)
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(ckpt)


def test_corrupt_files(ckpt: Path) -> None:
    (ckpt / "config.json").write_text("{nope")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_checkpoint(ckpt)


def test_corrupt_weights(ckpt: Path) -> None:
    (ckpt / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: not a readable safetensors"):
        load_checkpoint(ckpt)


def test_wrong_format_version(ckpt: Path) -> None:
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["format_version"] = 99
    (ckpt / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version expected 1, found 99"):
        load_checkpoint(ckpt)


def test_checkpoint_error_is_a_value_error() -> None:
    assert issubclass(CheckpointError, ValueError)
