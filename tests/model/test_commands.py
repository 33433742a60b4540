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


def neuroq(
    *args: str, timeout_s: float = 120, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    # One torch thread: on a busy 2-core machine a second one mostly waits.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if data_dir is not None:
        env["NEUROQ_DATA_DIR"] = str(data_dir)
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


TINY_ARGS = (
    "--epochs", "1", "--seq-len", "16", "--embed-dim", "16", "--hidden-dim", "32",
    "--num-heads", "2", "--num-layers", "1", "--max-seq-len", "32", "--threads", "1",
    "--precision", "fp32", "--vocab-size", "700",
)  # fmt: skip


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    write_corpus(corpus, build_synthetic(60, seed=2))
    return corpus


def test_a_model_trained_by_name_is_served_by_name(tmp_path: Path, small_corpus: Path) -> None:
    proc = neuroq("train", "--corpus", str(small_corpus), "--model", "mine", *TINY_ARGS,
                  data_dir=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "checkpoints" / "mine" / "model.safetensors").is_file()
    listed = neuroq("model", "list", data_dir=tmp_path)
    assert [line.split("\t")[0] for line in listed.stdout.splitlines()] == ["default", "mine"]
    args = ("generate", "hello", "--model", "mine", "--seed", "1", "--max-length", "5")
    assert neuroq(*args, data_dir=tmp_path).returncode == 0
    assert neuroq(*args, "--data-dir", str(tmp_path)).returncode == 0
    missing = neuroq("generate", "hello", "--model", "nope", data_dir=tmp_path)
    assert missing.returncode == 2 and "no model named 'nope'" in missing.stderr


def test_default_is_replaced_only_with_overwrite_and_reset_restores_it(
    tmp_path: Path, small_corpus: Path
) -> None:
    greedy = ("generate", "ChatGPTについて教えて", "--temperature", "0", "--max-length", "20")
    shipped = neuroq(*greedy, data_dir=tmp_path).stdout
    train = ("train", "--corpus", str(small_corpus), "--model", "default", *TINY_ARGS)
    refused = neuroq(*train, data_dir=tmp_path)
    assert refused.returncode == 2
    assert "--model" in refused.stderr and "--overwrite" in refused.stderr
    assert not (tmp_path / "checkpoints").exists()

    assert neuroq(*train, "--overwrite", data_dir=tmp_path).returncode == 0
    assert neuroq(*greedy, data_dir=tmp_path).stdout != shipped
    reset = neuroq("model", "reset", "default", data_dir=tmp_path)
    assert reset.returncode == 0 and "is the shipped model again" in reset.stdout
    assert neuroq(*greedy, data_dir=tmp_path).stdout == shipped
    assert "already the shipped model" in neuroq("model", "reset", data_dir=tmp_path).stdout
    other = neuroq("model", "reset", "mine", data_dir=tmp_path)
    assert other.returncode == 2 and "only 'default' has a shipped version" in other.stderr


@pytest.mark.slow
def test_from_model_fine_tunes_the_shipped_model(tmp_path: Path, small_corpus: Path) -> None:
    proc = neuroq(
        "train", "--corpus", str(small_corpus), "--model", "tuned", "--from-model", "default",
        "--epochs", "1", "--seq-len", "16", "--threads", "1", "--lr", "1e-9",
        data_dir=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shipped, _, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    tuned, _, meta = load_checkpoint(tmp_path / "checkpoints" / "tuned")
    assert tuned.config == shipped.config and meta["from_model"] == "default"
    for a, b in zip(shipped.state_dict().values(), tuned.state_dict().values(), strict=True):
        assert (a - b).abs().max() < 1e-4
    clash = CliRunner().invoke(
        main, ["train", "--model", "x", "--from-model", "default", "--embed-dim", "8"]
    )
    assert clash.exit_code == 2 and "leave out --embed-dim" in clash.output
