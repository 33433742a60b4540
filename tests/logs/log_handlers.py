"""Handlers for the job-log tests, loaded by a real `neuroq worker` process."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("tests.log_handlers")


def fails(job: dict[str, Any]) -> None:
    """Logs two lines from its thread, then raises: the traceback ends the job's log."""
    log.info("starting with n=%s", job["input"].get("n"))
    log.warning("about to fail <b>'x'</b> & more")
    raise ValueError("boom from the handler")


async def floods(job: dict[str, Any]) -> dict[str, int]:
    """Logs far past the per-job caps from a task, each line long enough to be cut."""
    for i in range(job["input"].get("lines", 3_000)):
        log.info("line %d %s", i, "y" * job["input"].get("width", 10))
    print("print() output is not captured")
    return {"logged": job["input"].get("lines", 3_000)}
