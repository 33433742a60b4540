"""Running `python -m neuroq ...` as a user does, for the tests in this folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: variables that would make a command find something other than what a test gives it
CLIENT_VARS = (
    "RUNPOD_API_KEY",
    "RUNPOD_ENDPOINT_ID",
    "NEUROQ_API_URL",
    "NEUROQ_URL",
    "NEUROQ_DATA_DIR",
    "NEUROQ_WORKER_KEY",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARS}
    env.update(extra)
    return env


def neuroq(
    *args: str,
    server: Any = None,
    stdin: str | None = None,
    cwd: Path | None = None,
    timeout_s: float = 60.0,
    python: bool = False,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    """`python -m neuroq ARGS` (`python ARGS` with python=True); with `server`, pointed at it
    with its client key."""
    if server is not None:
        env = {"NEUROQ_API_URL": server.base_url, "RUNPOD_API_KEY": server.api_key, **env}
    cmd = [sys.executable, *args] if python else [sys.executable, "-m", "neuroq", *args]
    return subprocess.run(
        cmd,
        env=clean_env(**env),
        input=stdin,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
