"""Schemathesis hooks for test_openapi.py (loaded through SCHEMATHESIS_HOOKS).

runsync holds its reply for at least 1 s when no worker finishes the job, so generated runsync
calls are sent to the endpoint a local worker serves, and every `wait` is capped at 1 s; the
fuzz run then stays within its time budget. The operations left out of the run, and why, are in
the test's `--exclude-operation-id` arguments (the OpenAI routes, writing endpoint settings).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import schemathesis

#: the endpoint served by the fuzz server's local echo worker
WORKED_ENDPOINT = "fuzz"
_PATH_SAFE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.query and "wait" in case.query:
        # A non-number stays as it is: the server answers 400 at once.
        with contextlib.suppress(TypeError, ValueError):
            case.query["wait"] = min(int(case.query["wait"]), 1000)
    path_parameters = case.path_parameters or {}
    endpoint_id = path_parameters.get("endpoint_id")
    if case.path.endswith("/runsync") and _PATH_SAFE.match(str(endpoint_id)):
        path_parameters["endpoint_id"] = WORKED_ENDPOINT
