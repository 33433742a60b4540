"""Helpers shared by the scaling tests: loading other test modules by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

TESTS = Path(__file__).resolve().parent.parent


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import the test module at `path` as module `name`, once."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def scenarios_of(module: ModuleType) -> dict[str, Any]:
    """Every `test_*` function of another module, to collect it again here: pytest resolves
    fixtures by where a test is collected, so this module's fixtures (a server on another store)
    replace the original module's while its other fixtures are imported alongside."""
    return {k: v for k, v in vars(module).items() if k.startswith("test_") and callable(v)}
