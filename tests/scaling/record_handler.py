"""A worker handler that appends one line per execution to a shared log, so a test can count how
many times each job really ran, and on which worker, whatever the server side reports.

NEUROQ_TEST_EXEC_LOG names the file and NEUROQ_TEST_WORKER_TAG the worker. Each line is written
with one O_APPEND write well under PIPE_BUF, so lines from concurrent processes never interleave.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

#: long enough that a SIGKILL finds jobs in flight, short enough for a hundred jobs a second
WORK_S = 0.05


def handler(job: dict[str, Any]) -> dict[str, Any]:
    tag = os.environ["NEUROQ_TEST_WORKER_TAG"]
    time.sleep(float(os.environ.get("NEUROQ_TEST_WORK_S", WORK_S)))
    line = json.dumps({"job": job["id"], "worker": tag}) + "\n"
    fd = os.open(os.environ["NEUROQ_TEST_EXEC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return {"worker": tag}
