"""The shipped corpus is reproducible from its generator, and corpus files are validated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_corpus import SCRIPT

from neuroq.model.corpus import (
    DATA_DIR,
    DEFAULT_CORPUS,
    CorpusError,
    Dialogue,
    corpus_sha256,
    load_corpus,
)


def test_shipped_corpus_matches_the_generator(tmp_path: Path) -> None:
    """scripts/build_corpus.py, run as documented, writes the shipped file byte for byte."""
    rebuilt = tmp_path / "c.jsonl"
    subprocess.run([sys.executable, str(SCRIPT), str(rebuilt)], check=True, capture_output=True)
    assert rebuilt.read_bytes() == DEFAULT_CORPUS.read_bytes()


def test_shipped_corpus_shape() -> None:
    dialogues = load_corpus("default")
    assert len(dialogues) > 3000
    assert all(d.user and d.assistant for d in dialogues)
    users = {d.user for d in dialogues}
    assert "ChatGPTについて教えて" in users and "Tell me about ChatGPT." in users
    assert DEFAULT_CORPUS.stat().st_size < 3_000_000
    assert (DATA_DIR / "SOURCES.md").is_file()


def test_load_jsonl_and_text(tmp_path: Path) -> None:
    j = tmp_path / "c.jsonl"
    j.write_text('{"user": "u", "assistant": "a"}\n\n{"text": "plain"}\n', encoding="utf-8")
    assert load_corpus(j) == [Dialogue("u", "a"), Dialogue(None, "plain")]
    t = tmp_path / "c.txt"
    t.write_text("one\n\ntwo\n", encoding="utf-8")
    assert load_corpus(t) == [Dialogue(None, "one"), Dialogue(None, "two")]
    assert corpus_sha256(load_corpus(t)) != corpus_sha256(load_corpus(j))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json\n", r"c.jsonl:1: not valid JSON"),
        ('{"user": "u"}\n', r"c.jsonl:1: 'assistant' must be a non-empty string"),
        ('{"user": 3, "assistant": "a"}\n', r"c.jsonl:1: 'user' must be a string"),
        ("[1]\n", r"c.jsonl:1: expected a JSON object"),
        ("\n", "has no records"),
    ],
)
def test_bad_corpus_lines(tmp_path: Path, content: str, message: str) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(CorpusError, match=message):
        load_corpus(p)


def test_missing_corpus(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(tmp_path / "nope.jsonl")
