"""An unmodified-SDK worker with one async handler; `input.op` picks the behaviour under test.

Concurrency comes from $COMPAT_CONCURRENCY (default 1) through `concurrency_modifier`, the only
way the SDK offers to take several jobs at once (spec 2.11)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import runpod
from _events import record


async def handler(job: dict[str, Any]) -> Any:
    args = job["input"]
    op = args.get("op", "echo")
    record("start", job["id"], op=op, keys=sorted(job))
    try:
        if op == "echo":
            return {"echo": args.get("value")}
        if op == "sleep":
            await asyncio.sleep(args["seconds"])
            return {"slept": args["seconds"]}
        if op == "raise":
            raise ValueError(args.get("message", "boom"))
        if op == "fail_once":
            # Fails on the first delivery of this job id, succeeds when /retry re-queues it.
            marker = Path(os.environ["COMPAT_EVENTS"]).with_name(f"failed-{job['id']}")
            if not marker.exists():
                marker.touch()
                raise RuntimeError("first attempt fails")
            return {"attempt": 2}
        if op == "error":
            return {"error": "bad"}
        if op == "empty":
            return {}
        if op == "none":
            return None
        if op == "progress":
            runpod.serverless.progress_update(job, "step 1")
            await asyncio.sleep(0.5)
            runpod.serverless.progress_update(job, {"step": 2})
            await asyncio.sleep(args.get("hold", 2.0))
            return {"done": True}
        if op == "refresh":
            return {"refresh_worker": True, "a": 1}
        if op == "s3":
            s3 = job.get("s3Config") or {}
            return {"bucket": s3.get("bucketName"), "keys": sorted(s3)}
        if op == "big":
            return "x" * args["size"]
        return {"unknown op": op}
    except asyncio.CancelledError:
        # What the docs ask of a handler: note it and let the cancellation through.
        record("cancelled", job["id"])
        raise
    finally:
        record("end", job["id"])


def concurrency(current: int) -> int:
    return int(os.environ.get("COMPAT_CONCURRENCY", "1"))


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "concurrency_modifier": concurrency})
