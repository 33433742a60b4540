"""`GET /v2/{endpoint_id}/logs/{job_id}`: a job's captured log lines, for `neuroq jobs logs` and
scripts. Our extension; hosted RunPod shows logs only in its console.

    GET /v2/{ep}/logs/{job_id}?after=SEQ&limit=N                        (client key)
    -> {"id", "status", "lines": [{"seq", "attempt", "at", "level", "line"}], "truncated",
        "nextAfter"}

Lines come in seq order; a reader follows a running job by passing the last seq it has as
`after` (`nextAfter` is that seq, or the `after` it sent when nothing new came). `truncated` says
some attempt of the job dropped lines at its cap (its TRUNCATED marker line says where). The
lines of an attempt that was requeued stay, with their `attempt` number. A job past retention is
404 like its status, and its lines are gone with it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api.schemas import query_int
from neuroq.jobs import is_path_safe
from neuroq.store.base import JobStore, LogLine

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 5_000


def line_object(line: LogLine) -> dict[str, object]:
    return {
        "seq": line.seq,
        "attempt": line.attempt,
        "at": line.at_ms,
        "level": line.level,
        "line": line.line,
    }


async def job_logs(request: Request) -> Response:
    if not request.app.state.keys.check_client(request.headers.get("authorization")):
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or the bare key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    endpoint_id: str = request.path_params["endpoint_id"]
    job_id: str = request.path_params["job_id"]
    if not is_path_safe(endpoint_id):
        raise HTTPException(
            404, "unknown endpoint: endpoint ids are 1-128 characters of A-Z a-z 0-9 _ -"
        )
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    store: JobStore = request.app.state.store
    found = (
        await store.read_logs(endpoint_id, job_id, after, limit) if is_path_safe(job_id) else None
    )
    if found is None:
        shown = job_id if is_path_safe(job_id) else "(invalid id)"
        raise HTTPException(404, f"job {shown} not found (unknown, or expired after its retention)")
    job, lines, truncated = found
    body = {
        "id": job.id,
        "status": job.status.value,
        "lines": [line_object(line) for line in lines],
        "truncated": truncated,
        "nextAfter": lines[-1].seq if lines else after,
    }
    return JSONResponse(body)


ROUTES: list[BaseRoute] = [Route("/v2/{endpoint_id}/logs/{job_id}", job_logs, methods=["GET"])]
