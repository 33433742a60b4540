"""`GET /v2/jobs`: the retained jobs as JSON, newest first, for `neuroq jobs list` and the
dashboard. Our extension; hosted RunPod has no such route.

    GET /v2/jobs?endpoint=EP&status=FAILED&since=MS&limit=50&offset=0      (client key)
    -> {"jobs": [summary, ...], "limit": 50, "offset": 0, "nextOffset": 50 | null}

It lives beside the client routes, under the base URL clients already know, at a depth where no
`/v2/{endpoint_id}/...` route can be shadowed. A summary is the job without its input and output
(either may be megabytes): `id`, `endpointId`, `status`, `createdAt`, `startedAt`, `finishedAt`
(ms since the epoch), `delayTime`, `executionTime`, `workerId`, `retries` and the first
ERROR_CHARS characters of `error`. `nextOffset` is the offset of the next page, null on the last.

`read_page` is the query and paging behind both this route and the dashboard's `/jobs`, so a
filter or an offset means the same thing in either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api.schemas import bad_request, parse_query_ms, query_int
from neuroq.jobs import Job, JobStatus, is_path_safe, now_ms
from neuroq.store.base import JobStore

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: an error longer than this is cut in the list; the job's status has all of it
ERROR_CHARS = 300


@dataclass(frozen=True)
class JobPage:
    """One page of the list: at most `limit` jobs, newest first; `next_offset` is where the
    next (older) page starts, None on the last."""

    jobs: list[Job]
    next_offset: int | None


async def read_page(
    store: JobStore,
    *,
    endpoint_id: str | None,
    status: str | None,
    since_ms: int,
    limit: int,
    offset: int,
    now_ms: int,
) -> JobPage:
    """The retained jobs created at or after `since_ms` (0: any), of one endpoint and status
    when given, skipping `offset`; the arguments are already checked by the caller."""
    # One more than asked tells whether a next page exists without counting.
    jobs = await store.list_jobs(
        endpoint_id=endpoint_id,
        status=status,
        since_ms=since_ms,
        limit=limit + 1,
        offset=offset,
        now_ms=now_ms,
    )
    return JobPage(jobs[:limit], offset + limit if len(jobs) > limit else None)


def summary(job: Job) -> dict[str, Any]:
    """One row of the list."""
    error: str | None = None
    if job.error_json is not None:
        value = json.loads(job.error_json)
        error = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if len(error) > ERROR_CHARS:
            error = error[: ERROR_CHARS - 1] + "…"
    return {
        "id": job.id,
        "endpointId": job.endpoint_id,
        "status": job.status.value,
        "createdAt": job.created_at_ms,
        "startedAt": job.started_at_ms,
        "finishedAt": job.finished_at_ms,
        "delayTime": job.delay_time_ms,
        "executionTime": job.execution_time_ms,
        "workerId": job.worker_id,
        "retries": job.retries,
        "error": error,
    }


async def list_jobs(request: Request) -> Response:
    if not request.app.state.keys.check_client(request.headers.get("authorization")):
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or the bare key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    endpoint_id = request.query_params.get("endpoint") or None
    if endpoint_id is not None and not is_path_safe(endpoint_id):
        raise bad_request("endpoint must be 1-128 characters of A-Z a-z 0-9 _ -")
    status = request.query_params.get("status") or None
    if status is not None and status not in JobStatus.__members__:
        raise bad_request(f"status must be one of {', '.join(JobStatus.__members__)}")
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = query_int(request, "offset", 0, 0, 10**9)
    since_ms = parse_query_ms(request, "since") or 0
    found = await read_page(
        request.app.state.store,
        endpoint_id=endpoint_id,
        status=status,
        since_ms=since_ms,
        limit=limit,
        offset=offset,
        now_ms=now_ms(),
    )
    body = {
        "jobs": [summary(job) for job in found.jobs],
        "limit": limit,
        "offset": offset,
        "nextOffset": found.next_offset,
    }
    return JSONResponse(body)


ROUTES: list[BaseRoute] = [Route("/v2/jobs", list_jobs, methods=["GET"])]
