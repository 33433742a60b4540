"""Helpers shared by the scaling tests: loading other test modules by path, and polling.

Every conftest.py in a folder without __init__.py is imported as module "conftest", so
`from conftest import ...` finds whichever was loaded last; the root conftest is therefore loaded
by path, under the cache name tests/worker and tests/client use, so it is loaded once.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

TESTS = Path(__file__).resolve().parent.parent


def load_by_path(name: str, path: Path) -> ModuleType:
    """Import `path` as module `name` once. While it runs, `conftest` is the root conftest, which
    is what a test module's own `from conftest import ...` means when it is collected itself."""
    if name in sys.modules:
        return sys.modules[name]
    root = root_conftest() if name != "neuroq_tests_root_conftest" else None
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    previous = sys.modules.get("conftest")
    if root is not None:
        sys.modules["conftest"] = root
    try:
        spec.loader.exec_module(module)
    finally:
        if previous is not None:
            sys.modules["conftest"] = previous
        elif root is not None:
            del sys.modules["conftest"]
    return module


def root_conftest() -> ModuleType:
    return load_by_path("neuroq_tests_root_conftest", TESTS / "conftest.py")


def scenarios_of(module: ModuleType) -> dict[str, Any]:
    """Every `test_*` function of another module, to collect it again here: pytest resolves
    fixtures by where a test is collected, so this module's fixtures (a server on another store)
    replace the original module's while its other fixtures are imported alongside."""
    return {k: v for k, v in vars(module).items() if k.startswith("test_") and callable(v)}


def poll_until(check: Any, timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Call `check` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)
