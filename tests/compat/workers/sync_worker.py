"""An unmodified-SDK worker with a plain sync handler, which blocks the SDK's event loop while it
runs (spec 2.11): heartbeats still flow from the SDK's separate ping process."""

from __future__ import annotations

import time
from typing import Any

import runpod
from _events import record


def handler(job: dict[str, Any]) -> Any:
    args = job["input"]
    record("start", job["id"])
    time.sleep(args.get("seconds", 0))
    record("end", job["id"])
    return {"slept": args.get("seconds", 0), "value": args.get("value")}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
