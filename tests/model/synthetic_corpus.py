"""The corpus generator of scripts/build_corpus.py, for tests that need a small, deterministic
corpus in the shipped one's style. The script is a tool, not part of the package, so it is
loaded from its path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_corpus.py"

_spec = importlib.util.spec_from_file_location("build_corpus", SCRIPT)
assert _spec is not None and _spec.loader is not None
build_corpus = importlib.util.module_from_spec(_spec)
sys.modules["build_corpus"] = build_corpus
_spec.loader.exec_module(build_corpus)

build_synthetic = build_corpus.build_synthetic
