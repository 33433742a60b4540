"""What an SDK worker's handler saw, appended as JSON lines to $COMPAT_EVENTS for the test to read
(the handler runs in another process, so this file is the only way to observe it)."""

from __future__ import annotations

import json
import os
import time
from typing import Any


def record(event: str, job_id: str, **fields: Any) -> None:
    line = json.dumps({"event": event, "id": job_id, "t": time.time(), **fields}) + "\n"
    # One write per line on an O_APPEND descriptor, so concurrent handlers do not interleave.
    fd = os.open(os.environ["COMPAT_EVENTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
