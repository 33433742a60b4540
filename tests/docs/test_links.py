"""The documentation points only at things a reader of this repository can open.

README.md and docs/*.md are read for three kinds of reference: relative markdown links, repo
paths in backticks (`neuroq/api/app.py`, `tests/api/`), and references to material outside the
repository (the design spec, working sessions, issue numbers), which a reader cannot follow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: [text](target), not an image's; the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"`([^`\n]+)`")
REPO_DIRS = ("neuroq/", "docs/", "bench/", "scripts/", "tests/", "deploy/", "examples/")
#: what a backticked path may carry after it: `file.py:function`, `test.py::test`, arguments
PATH_END = re.compile(r"[\s:(\[{]")
OUTSIDE = re.compile(r"shared/spec|\bspec\b|§|\bsession \d+|\bissue #?\d+", re.IGNORECASE)


def _text(path: Path) -> str:
    """The file without fenced code blocks: commands and sample output there are not links."""
    return re.sub(r"(?ms)^```.*?^```", "", path.read_text())


def _exists(repo: Path, target: str) -> bool:
    if any(ch in target for ch in "*?["):
        return any(repo.glob(target))
    return (repo / target).exists()


def dead_links(doc: Path, repo: Path = REPO) -> list[str]:
    dead = []
    for target in LINK.findall(_text(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor in the same page
        path = target.split("#", 1)[0]
        resolved = (doc.parent / path).resolve()
        if not resolved.is_relative_to(repo) or not resolved.exists():
            dead.append(target)
    return dead


def dead_paths(doc: Path, repo: Path = REPO) -> list[str]:
    dead = []
    for code in CODE.findall(_text(doc)):
        if not code.startswith(REPO_DIRS):
            continue
        path = PATH_END.split(code, 1)[0].rstrip(".,;")
        if "{" in code.split()[0] or "..." in path:
            continue  # a template (`docs/{name}.md`) or an elision, not a path
        if not _exists(repo, path):
            dead.append(code)
    return dead


def outside_references(doc: Path) -> list[str]:
    found = []
    for number, line in enumerate(doc.read_text().splitlines(), 1):
        match = OUTSIDE.search(line)
        if match:
            found.append(f"line {number}: {match.group(0)!r} in {line.strip()[:100]!r}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_markdown_links_reach_files_in_the_repo(doc: Path) -> None:
    assert dead_links(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_backticked_repo_paths_exist(doc: Path) -> None:
    assert dead_paths(doc) == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_references_a_reader_cannot_follow(doc: Path) -> None:
    assert outside_references(doc) == []


def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    """The checks themselves, on a page with one of each fault and one of each good form."""
    for path in ("README.md", "docs/api.md", "neuroq/api/app.py", "tests/api/test_a.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "[ok](api.md#routes) [gone](nowhere.md) [web](https://example.com) [up](../README.md)\n"
        "`neuroq/api/app.py` `neuroq/api/app.py:create_app` `tests/api/test_*.py`\n"
        "`neuroq/api/missing.py` `docs/{page}.md`\n"
        "as shared/spec/runpod-compat.md says\n(spec 2.6)\n§4 of it\nsince session 12\nissue 7\n"
        "an OpenAPI document, a spectrum, sessions\n"
    )
    assert dead_links(page, tmp_path) == ["nowhere.md"]
    assert dead_paths(page, tmp_path) == ["neuroq/api/missing.py"]
    assert [ref.split(":")[0] for ref in outside_references(page)] == [
        f"line {n}" for n in range(4, 9)
    ]
