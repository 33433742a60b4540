"""An unmodified-SDK worker with `refresh_worker: True`: every result carries stopPod and the SDK
shuts itself down after its job (spec 2.11)."""

from __future__ import annotations

from typing import Any

import runpod


async def handler(job: dict[str, Any]) -> Any:
    return {"once": job["input"].get("value")}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler, "refresh_worker": True})
