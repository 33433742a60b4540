"""Training: the loss falls, runs are reproducible, resume continues, cancellation is safe."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from synthetic_corpus import build_synthetic

from neuroq.model.checkpoint import load_checkpoint
from neuroq.model.corpus import Dialogue
from neuroq.model.model import NeuroQ, NeuroQConfig
from neuroq.model.tokenizer import Tokenizer, train_tokenizer
from neuroq.model.train import (
    ProgressEvent,
    TerminalProgress,
    encode_stream,
    evaluate,
    lr_at,
    resolve_precision,
    split_dialogues,
    train,
)

SEQ_LEN = 16
# Two threads on a busy 2-core machine spend most of their time waiting for each other.
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data() -> list[Dialogue]:
    return build_synthetic(60, seed=11)


@pytest.fixture(scope="module")
def tok(data: list[Dialogue]) -> Tokenizer:
    texts = [t for d in data for t in (d.user, d.assistant) if t]
    return train_tokenizer(texts, vocab_size=700)


@pytest.fixture(scope="module")
def config(tok: Tokenizer) -> NeuroQConfig:
    return NeuroQConfig(
        vocab_size=tok.vocab_size,
        embed_dim=16,
        hidden_dim=32,
        num_heads=2,
        num_layers=1,
        max_seq_len=32,
    )


def quiet() -> TerminalProgress:
    return TerminalProgress(io.StringIO())


def stop_after(steps: int) -> Callable[[], bool]:
    """A should_stop that lets `steps` steps run, then asks to stop."""
    calls = 0

    def should_stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > steps

    return should_stop


def run(
    data: list[Dialogue], config: NeuroQConfig, tok: Tokenizer, out: Path, epochs: int, **kw: object
) -> tuple[list[ProgressEvent], object]:
    events: list[ProgressEvent] = []
    result = train(
        data,
        config,
        tok,
        epochs=epochs,
        out_dir=out,
        batch_size=8,
        lr=3e-3,
        seq_len=SEQ_LEN,
        seed=0,
        progress=events.append,
        terminal=quiet(),
        **kw,  # type: ignore[arg-type]
    )
    return events, result


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_loss_decreases(
    data: list[Dialogue], config: NeuroQConfig, tok: Tokenizer, tmp_path: Path, precision: str
) -> None:
    """Both precisions learn: bfloat16 autocast (the default on CPUs with native bf16) as well
    as plain float32."""
    _, held_out = split_dialogues(data, seed=0)
    torch.manual_seed(0)
    initial = evaluate(NeuroQ(config), encode_stream(held_out, tok), SEQ_LEN, 8)
    events, result = run(data, config, tok, tmp_path / "ck", epochs=3, precision=precision)
    assert initial is not None and result.eval_loss is not None  # type: ignore[attr-defined]
    assert result.eval_loss < initial - 0.5  # type: ignore[attr-defined]
    first = sum(e.loss for e in events[:5]) / 5
    last = sum(e.loss for e in events[-5:]) / 5
    assert last < first - 0.5
    assert math.isclose(result.eval_perplexity, math.exp(result.eval_loss))  # type: ignore[attr-defined]
    # Events are numbered and carry the schedule.
    assert [e.step for e in events] == list(range(1, len(events) + 1))
    assert events[-1].step == events[-1].total_steps and events[-1].epoch == 3
    assert all(e.tokens_per_s > 0 and e.lr > 0 for e in events)
    _, _, meta = load_checkpoint(tmp_path / "ck")
    assert meta["epochs"] == 3 and meta["steps"] == len(events)
    assert meta["eval_loss"] == pytest.approx(result.eval_loss)  # type: ignore[attr-defined]
    assert meta["precision"] == precision


def test_precision_choice() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    assert resolve_precision("auto", cuda) is None  # bf16 autocast is only chosen on CPUs
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", cpu) is (torch.bfloat16 if native else None)
    with pytest.raises(ValueError, match=r"^precision: must be one of auto, bf16, fp32"):
        resolve_precision("fp16", cpu)


def test_same_seed_same_losses(
    data: list[Dialogue], config: NeuroQConfig, tok: Tokenizer, tmp_path: Path
) -> None:
    a, _ = run(data, config, tok, tmp_path / "a", epochs=1)
    b, _ = run(data, config, tok, tmp_path / "b", epochs=1)
    assert [e.loss for e in a] == [e.loss for e in b]
    wa = load_checkpoint(tmp_path / "a")[0].state_dict()
    wb = load_checkpoint(tmp_path / "b")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_continues_like_an_uninterrupted_run(
    data: list[Dialogue], config: NeuroQConfig, tok: Tokenizer, tmp_path: Path
) -> None:
    full, _ = run(data, config, tok, tmp_path / "full", epochs=2)
    per_epoch = len(full) // 2
    # Same plan (2 epochs, same schedule), cancelled as the second epoch starts.
    first, r1 = run(
        data, config, tok, tmp_path / "part", epochs=2, should_stop=stop_after(per_epoch)
    )
    second, r2 = run(data, config, tok, tmp_path / "part", epochs=2, resume=True)
    assert r1.stopped and r1.epochs == 1  # type: ignore[attr-defined]
    assert r1.steps == per_epoch and r2.steps == len(full)  # type: ignore[attr-defined]
    assert r2.epochs == 2  # type: ignore[attr-defined]
    assert [e.step for e in second] == list(range(len(first) + 1, len(full) + 1))
    # Optimizer moments, schedule and dropout RNG were restored: the losses match exactly.
    assert [e.loss for e in second] == [e.loss for e in full[len(first) :]]


def test_should_stop_keeps_previous_checkpoint(
    data: list[Dialogue], config: NeuroQConfig, tok: Tokenizer, tmp_path: Path
) -> None:
    out = tmp_path / "ck"
    run(data, config, tok, out, epochs=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    events, result = run(data, config, tok, out, epochs=3, resume=True, should_stop=stop_after(3))
    assert len(events) == 3
    assert result.stopped and result.epochs == 1  # type: ignore[attr-defined]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_stop_before_first_epoch_writes_nothing(
    data: list[Dialogue], config: NeuroQConfig, tok: Tokenizer, tmp_path: Path
) -> None:
    events, result = run(data, config, tok, tmp_path / "ck", epochs=1, should_stop=lambda: True)
    assert events == [] and result.stopped  # type: ignore[attr-defined]
    assert not (tmp_path / "ck").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"batch_size": -1}, "batch_size must be a positive integer"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"seq_len": 64}, "seq_len 64 exceeds the model's max_seq_len 32"),
        ({"precision": "half"}, "precision: must be one of"),
    ],
)
def test_invalid_arguments(
    data: list[Dialogue],
    config: NeuroQConfig,
    tok: Tokenizer,
    tmp_path: Path,
    kwargs: dict[str, object],
    message: str,
) -> None:
    args: dict[str, object] = {"epochs": 1, "out_dir": tmp_path / "ck", "terminal": quiet()}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        train(data, config, tok, **args)  # type: ignore[arg-type]


def test_corpus_too_small(config: NeuroQConfig, tok: Tokenizer, tmp_path: Path) -> None:
    tiny = [Dialogue("hi", "yo")] * 3
    with pytest.raises(ValueError, match="fewer than seq_len"):
        train(tiny, config, tok, epochs=1, out_dir=tmp_path, seq_len=16, terminal=quiet())


def test_vocab_mismatch(data: list[Dialogue], tok: Tokenizer, tmp_path: Path) -> None:
    cfg = NeuroQConfig(vocab_size=tok.vocab_size + 1, embed_dim=16, num_heads=2, num_layers=1)
    with pytest.raises(ValueError, match="vocab_size"):
        train(data, cfg, tok, epochs=1, out_dir=tmp_path, terminal=quiet())


def test_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


def test_terminal_progress_plain_lines() -> None:
    out = io.StringIO()
    term = TerminalProgress(out, interval_s=0.0)
    term(ProgressEvent(1, 2, 5, 10, 3.25, 1500.0, 1e-3))
    term(ProgressEvent(2, 2, 10, 10, 2.5, 1500.0, 1e-4))
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert "epoch 1/2" in lines[0] and "5/10" in lines[0] and "loss 3.250" in lines[0]
    assert "1.5k tok/s" in lines[0]
