"""Generate the shipped synthetic corpus, neuroq/model/data/synthetic_dialogues.jsonl.

    python scripts/build_corpus.py [OUT]

The text lives in corpus_tables.json beside this script (our own sentences, MIT like the rest of
the project); this script only combines it. Generation is deterministic (seed 0, 6,000 draws,
duplicates dropped), so the shipped file can be rebuilt byte for byte, and a test checks that it
still is. The package only loads the result (neuroq.model.corpus); this tool is not shipped.

The tables:
- topics: per group, a name and facts in each language. The first fact is the definition; an
  answer is the definition plus a random subset of up to three other facts, between an optional
  opener and closer.
- questions, openers, closers: templates per language; `{x}` is the topic's name.
- advice: a task and tips per language; an answer lists two or more of the tips.
- advice_questions: templates per language; `{x}` is the task.
- small_talk: user variants and assistant variants; every pairing is a valid dialogue.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from neuroq.model.corpus import DEFAULT_CORPUS, Dialogue, write_corpus

TABLES = Path(__file__).resolve().with_name("corpus_tables.json")
SEED = 0
COUNT = 6000


def load_tables(path: Path = TABLES) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        tables: dict[str, Any] = json.load(f)
    return tables


def topic_dialogue(
    rng: random.Random, tables: dict[str, Any], topic: dict[str, Any], lang: str
) -> Dialogue:
    user = rng.choice(tables["questions"][lang]).format(x=topic[f"{lang}_name"])
    facts = topic[f"{lang}_facts"]
    opener, closer = rng.choice(tables["openers"][lang]), rng.choice(tables["closers"][lang])
    extra = rng.sample(facts[1:], k=rng.randint(0, min(3, len(facts) - 1)))
    body = ("" if lang == "ja" else " ").join([facts[0], *extra])
    return Dialogue(user, f"{opener}{body}{closer}".strip())


def advice_dialogue(rng: random.Random, tables: dict[str, Any], lang: str) -> Dialogue:
    advice = rng.choice(tables["advice"])
    user = rng.choice(tables["advice_questions"][lang]).format(x=advice[f"{lang}_task"])
    tips = advice[f"{lang}_tips"]
    tips = rng.sample(tips, k=rng.randint(2, len(tips)))
    if lang == "ja":
        return Dialogue(user, "いくつかコツがあります。" + "".join(tips))
    return Dialogue(user, "Here are a few tips. " + " ".join(tips))


def build_synthetic(
    count: int = COUNT, seed: int = SEED, tables: dict[str, Any] | None = None
) -> list[Dialogue]:
    """Deterministic synthetic dialogues: topic questions (70 %), advice (15 %), small talk (15 %),
    60 % of them Japanese. Duplicates are dropped, so the result can be shorter than `count`."""
    tables = load_tables() if tables is None else tables
    rng = random.Random(seed)
    topics = [t for group in tables["topics"].values() for t in group]
    seen: set[Dialogue] = set()
    out: list[Dialogue] = []
    for _ in range(count):
        lang = "ja" if rng.random() < 0.6 else "en"
        kind = rng.random()
        if kind < 0.70:
            d = topic_dialogue(rng, tables, rng.choice(topics), lang)
        elif kind < 0.85:
            d = advice_dialogue(rng, tables, lang)
        else:
            talk = rng.choice(tables["small_talk"])
            d = Dialogue(rng.choice(talk["user"]), rng.choice(talk["assistant"]))
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_CORPUS)
    out: Path = parser.parse_args().out
    dialogues = build_synthetic()
    out.parent.mkdir(parents=True, exist_ok=True)
    write_corpus(out, dialogues)
    print(f"wrote {len(dialogues)} dialogues to {out}")


if __name__ == "__main__":
    main()
