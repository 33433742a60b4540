"""`neuroq train` through its real entry point, with a tiny model on 200 dialogues: its progress
on stderr is a live tqdm bar on a terminal and plain lines elsewhere, the result line goes to
stdout; and the defaults its --help states are the ones a new model gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_support import neuroq, on_terminal

from neuroq.model.commands import ARCHITECTURE_DEFAULTS, DEFAULT_VOCAB_SIZE
from neuroq.model.corpus import DEFAULT_CORPUS

pytestmark = pytest.mark.timeout(180)

TINY = (
    "--epochs", "2", "--batch-size", "32", "--seq-len", "16", "--embed-dim", "16",
    "--hidden-dim", "32", "--num-heads", "2", "--num-layers", "1", "--max-seq-len", "32",
    "--threads", "1", "--precision", "fp32", "--vocab-size", "1000",
)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    lines = DEFAULT_CORPUS.read_text(encoding="utf-8").splitlines()[:200]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def steps_of(stdout: str) -> int:
    found = re.match(r"done: 2 epochs, (\d+) steps, eval loss \d", stdout)
    assert found, stdout
    return int(found.group(1))


def test_progress_is_a_live_bar_on_a_terminal(corpus: Path, tmp_path: Path) -> None:
    args = ("train", "--corpus", str(corpus), "--out", str(tmp_path / "ck"), *TINY)
    code, stdout, drawn = on_terminal(*args, timeout_s=150, OMP_NUM_THREADS="1")
    assert code == 0, drawn
    steps = steps_of(stdout)
    # tqdm's bar over the whole run, redrawn in place, ending full with the last step's figures
    assert "\r" in drawn
    bar = rf"epoch 2/2: 100%\|[^|\n]*\| {steps}/{steps} \[[^\]]*loss \d\.\d{{3}} [\d.]+k tok/s"
    assert re.search(bar, drawn), drawn
    # each epoch's summary is a line of its own above the bar
    assert re.search(r"^epoch 1/2: train loss \d", drawn.replace("\r", "\n"), re.MULTILINE)


def test_progress_is_plain_lines_off_a_terminal(corpus: Path, tmp_path: Path) -> None:
    done = neuroq(
        "train", "--corpus", str(corpus), "--out", str(tmp_path / "ck"), *TINY,
        timeout_s=150, OMP_NUM_THREADS="1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    steps = steps_of(done.stdout)
    assert "\r" not in done.stderr and "%|" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("training ") and "parameters on" in lines[0]
    assert re.search(rf"^epoch 2/2 {steps}/{steps} loss \d\.\d{{3}} ", done.stderr, re.MULTILINE)
    assert any(line.startswith("epoch 2/2: train loss") for line in lines)


def test_the_defaults_in_the_help_are_the_models() -> None:
    """`--help` restates them so that it needs no torch; they must not drift apart."""
    from neuroq.model.model import NeuroQConfig
    from neuroq.model.tokenizer import DEFAULT_VOCAB_SIZE as TOKENIZER_VOCAB_SIZE

    layered, brain = NeuroQConfig(), NeuroQConfig.brain_defaults()
    for name, (layered_value, brain_value) in ARCHITECTURE_DEFAULTS.items():
        assert (getattr(layered, name), getattr(brain, name)) == (layered_value, brain_value)
    assert DEFAULT_VOCAB_SIZE == TOKENIZER_VOCAB_SIZE
    shown = neuroq("train", "--help").stdout
    assert "[default: 64, brain mode 128]" in shown and "[default: 4000]" in shown
