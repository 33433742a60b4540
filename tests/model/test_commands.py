"""The `neuroq train`, `generate` and `tokenizer` commands, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from synthetic_corpus import build_synthetic

from neuroq.cli import main
from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from neuroq.model.commands import generate
from neuroq.model.corpus import write_corpus
from neuroq.model.decode import PRECISIONS

REPO = Path(__file__).resolve().parents[2]


def neuroq(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    # One torch thread: on a busy 2-core machine a second one mostly waits.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "neuroq", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=REPO,
        env=env,
    )


def test_generate_with_the_shipped_default_model() -> None:
    assert (DEFAULT_CHECKPOINT / "model.safetensors").is_file()
    proc = neuroq("generate", "こんにちは", "--seed", "0", "--max-length", "30")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_generate_precision_option() -> None:
    args = ("generate", "こんにちは", "--seed", "0", "--max-length", "30")
    fp16 = neuroq(*args, "--precision", "fp16")
    assert fp16.returncode == 0, fp16.stderr
    # The shipped model gives the same reply either way (tests/model/test_decode.py).
    assert fp16.stdout == neuroq(*args).stdout
    bad = CliRunner().invoke(main, [*args, "--precision", "bf16"])
    assert bad.exit_code == 2 and "--precision" in bad.output
    (option,) = [p for p in generate.params if p.name == "precision"]
    assert tuple(option.type.choices) == PRECISIONS  # type: ignore[attr-defined]


def test_generate_stream_prints_the_same_reply() -> None:
    args = ("generate", "ChatGPTについて教えて", "--seed", "3", "--max-length", "40")
    plain = neuroq(*args)
    streamed = neuroq(*args, "--stream")
    assert plain.returncode == 0 and streamed.returncode == 0, plain.stderr + streamed.stderr
    assert plain.stdout.strip() and streamed.stdout == plain.stdout


def test_train_tokenizer_and_generate_end_to_end(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, build_synthetic(60, seed=2))
    tok_dir = tmp_path / "tok"
    proc = neuroq(
        "tokenizer", "--corpus", str(corpus), "--out", str(tok_dir), "--vocab-size", "700"
    )
    assert proc.returncode == 0, proc.stderr
    assert (tok_dir / "tokenizer.model").is_file()
    ck = tmp_path / "ck"
    proc = neuroq(
        "train", "--corpus", str(corpus), "--out", str(ck), "--tokenizer", str(tok_dir),
        "--epochs", "1", "--seq-len", "16", "--embed-dim", "16", "--hidden-dim", "32",
        "--num-heads", "2", "--num-layers", "1", "--max-seq-len", "32", "--threads", "1",
        "--precision", "fp32",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "eval loss" in proc.stdout and "epoch 1/1" in proc.stderr
    meta = json.loads((ck / "meta.json").read_text())
    assert meta["epochs"] == 1 and meta["seq_len"] == 16 and meta["precision"] == "fp32"
    model, _, _ = load_checkpoint(ck)
    assert model.config.embed_dim == 16
    proc = neuroq("generate", "hello", "--checkpoint", str(ck), "--seed", "1", "--max-length", "5")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["generate", "hi", "--top-k", "999"], "--top-k"),
        (["generate", "hi", "--temperature", "-1"], "--temperature"),
        (["generate", "hi", "--max-length", "0"], "--max-length"),
        (["generate", "hi", "--top-p", "1.5"], "--top-p"),
        (["generate", "hi", "--repetition-penalty", "0.5"], "--repetition-penalty"),
        (["generate", "hi", "--seed", "-4"], "--seed"),
        (["generate", "hi", "--checkpoint", "/nonexistent/ck"], "--checkpoint"),
        (["train", "--out", "x", "--epochs", "0"], "--epochs"),
        (["train", "--out", "x", "--lr", "-1"], "--lr"),
        (["train", "--out", "x", "--mode", "quantum"], "--mode"),
        (["train", "--out", "x", "--seq-len", "1"], "--seq-len"),
        (["train", "--out", "x", "--corpus", "/nonexistent.jsonl"], "--corpus"),
        (["train", "--out", "x", "--vocab-size", "10"], "--vocab-size"),
        (["train", "--out", "x", "--dropout", "1.5"], "--dropout"),
        (["train", "--out", "x", "--precision", "fp16"], "--precision"),
        (["tokenizer", "--out", "x", "--vocab-size", "5"], "--vocab-size"),
    ],
)
def test_invalid_options_name_the_parameter(args: list[str], option: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_invalid_model_option_combination_is_named(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    write_corpus(corpus, build_synthetic(30, seed=4))
    result = CliRunner().invoke(
        main,
        ["train", "--corpus", str(corpus), "--out", str(tmp_path / "ck"), "--vocab-size", "700",
         "--embed-dim", "30", "--num-heads", "4"],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "embed_dim" in result.output


def test_generate_help_states_the_length_cap() -> None:
    from neuroq.model.sampling import MAX_LENGTH_CAP

    proc = neuroq("generate", "--help")
    assert proc.returncode == 0, proc.stderr
    assert f"1-{MAX_LENGTH_CAP}" in proc.stdout
    assert "greedy" in proc.stdout


def test_generate_temperature_zero_is_greedy() -> None:
    args = ("generate", "Pythonについて教えて", "--max-length", "30", "--temperature", "0")
    first = neuroq(*args, "--seed", "1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()
    assert neuroq(*args, "--seed", "2").stdout == first.stdout
