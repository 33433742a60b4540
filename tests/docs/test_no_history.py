"""The documentation describes the product as it is, not the story of how it got there.

README.md and docs/*.md are searched for phrases that only ever tell history ("no longer",
"previously", "is now", "until the bench is run again"). The list holds only phrases with no
present-tense use in these pages: a plain "now" ("the job as it is now", "workers now", "now +
lease_ms") or "used to" ("the key used to sign") is left alone, as words a reader must judge.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

HISTORY = re.compile(
    r"\bno longer\b"
    r"|\bpreviously\b"
    r"|\bformerly\b"
    r"|\banymore\b"
    r"|\bused to be\b"
    r"|\b(?:was|were|has been|have been) (?:changed|fixed|renamed|replaced)\b"
    r"|(?<!\bas it )(?<!\bas they )\b(?:is|are) now\b"
    r"|\bnow (?:is|are)\b"
    r"|\buntil the bench\b"
    r"|\bin the past\b"
    r"|\bas of (?:today|now|(?:19|20)\d\d)\b"
    r"|\bthe old (?:behaviou?r|code|version|way)\b",
    re.IGNORECASE,
)

#: pages that still carry a flagged phrase, and the phrase; each entry fails strictly once the
#: page is fixed, so the list only shrinks
PENDING: dict[str, str] = {}


def history_phrases(text: str) -> list[str]:
    """Each flagged phrase as `line N: 'phrase'`. A phrase may wrap onto the next line, so each
    line break (with the blanks around it) reads as one space."""
    joined_parts: list[str] = []
    breaks: list[int] = []  # where in the joined text each line break became a space
    for number, line in enumerate(text.split("\n")):
        if number:
            breaks.append(sum(map(len, joined_parts)))
            joined_parts.append(" ")
        joined_parts.append(line.strip(" \t") if number else line.rstrip(" \t"))
    joined = "".join(joined_parts)
    return [
        f"line {1 + sum(1 for at in breaks if at < match.start())}: {match.group(0)!r}"
        for match in HISTORY.finditer(joined)
    ]


def _param(doc: Path) -> object:
    name = str(doc.relative_to(REPO))
    if name in PENDING:
        reason = f"carries {PENDING[name]!r}: for its owner to rewrite"
        return pytest.param(doc, id=name, marks=pytest.mark.xfail(strict=True, reason=reason))
    return pytest.param(doc, id=name)


@pytest.mark.parametrize("doc", [_param(doc) for doc in DOCS])
def test_docs_tell_no_history(doc: Path) -> None:
    assert history_phrases(doc.read_text()) == []


def test_the_check_flags_history_and_spares_the_present() -> None:
    page = (
        "The drain is no longer bounded. It was previously one\n"
        "commit per job; the cap is now a limit and the\n"
        "gains are lower bounds until the bench is run again. That code was changed.\n"
        "As of 2026 it runs; it used to be slow, and now is fast.\n"
        # the present, which must pass
        "the job as it is now; workers now and starting; now + lease_ms; now() returns ms;\n"
        "a known limit; nowhere else; the key used to sign cookies; 30 s from now;\n"
        "no more than 4 MiB; a newer job; the jobs are queued now or later\n"
    )
    assert history_phrases(page) == [
        "line 1: 'no longer'",
        "line 1: 'previously'",
        "line 2: 'is now'",
        "line 3: 'until the bench'",
        "line 3: 'was changed'",
        "line 4: 'As of 2026'",
        "line 4: 'used to be'",
        "line 4: 'now is'",
    ]


def test_a_phrase_split_over_two_lines_is_found() -> None:
    assert history_phrases("it is\nno\nlonger so") == ["line 2: 'no longer'"]
