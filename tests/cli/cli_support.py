"""Running `python -m neuroq ...` as a user does, for the tests in this folder: with its output
captured, or with stderr on a pseudo-terminal as in an interactive shell."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

from harness import RUN_ID, RUN_ID_VAR, end_group

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


def on_terminal(
    *args: str, timeout_s: float = 60.0, columns: int = 120, **env: str
) -> tuple[int, str, str]:
    """`python -m neuroq ARGS` with stdout piped and stderr on a pseudo-terminal `columns` wide,
    in its own process group, ended with it: (exit code, stdout, what the terminal showed)."""
    master, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "neuroq", *args],
            env={**clean_env(**env), RUN_ID_VAR: RUN_ID},
            stdout=subprocess.PIPE,
            stderr=terminal,
            start_new_session=True,
        )
    finally:
        os.close(terminal)
    drawn = b""
    deadline = time.monotonic() + timeout_s
    try:
        with contextlib.suppress(OSError):  # EIO once the command has exited
            while select.select([master], [], [], max(0.0, deadline - time.monotonic()))[0]:
                chunk = os.read(master, 4096)
                if not chunk:
                    break
                drawn += chunk
        stdout = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))[0]
    finally:
        os.close(master)
        end_group(proc)
    return proc.returncode, stdout.decode(), drawn.decode(errors="replace")
