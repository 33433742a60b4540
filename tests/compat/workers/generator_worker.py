"""An unmodified-SDK worker with a sync generator and `return_aggregate_stream`, so the final
result is the list of every yielded chunk (spec 2.11)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import runpod


def handler(job: dict[str, Any]) -> Iterator[Any]:
    for i in range(job["input"]["count"]):
        # Spread over time so a client reading /stream sees several partial replies.
        time.sleep(job["input"].get("gap", 0.3))
        yield {"i": i}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
