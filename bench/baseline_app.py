"""The ceiling for bench_jobs.py: a bare ASGI app answering the client routes with fixed JSON.

No framework, no queue, no worker, no database: `run` answers IN_QUEUE, and `runsync` and
`status` (with or without `?wait=`) answer COMPLETED at once, so a client's full submit-and-wait
cycle costs exactly its HTTP round trips: one by `/runsync`, two by `/run` then `/status`.
Run with: uvicorn bench.baseline_app:app
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_ids = itertools.count()
_HEADERS = [(b"content-type", b"application/json")]


async def _reply(send: Send, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": data})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    parts = scope["path"].strip("/").split("/")  # v2, endpoint, op, [job id]
    op = parts[2] if len(parts) > 2 else ""
    if op in ("run",):
        await _reply(send, {"id": f"job-{next(_ids)}", "status": "IN_QUEUE"})
    elif op in ("status", "runsync", "status-sync"):
        job_id = parts[3] if len(parts) > 3 else f"job-{next(_ids)}"
        await _reply(send, {"id": job_id, "status": "COMPLETED", "output": {"ok": True}})
    elif op == "health":
        await _reply(send, {"jobs": {}, "workers": {}})
    else:
        await _reply(send, {"id": "x", "status": "COMPLETED"})
