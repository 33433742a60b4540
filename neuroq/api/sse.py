"""A job's stream as server-sent events, for both routes that offer it.

The client's `GET /v2/{ep}/stream/{id}` with `Accept: text/event-stream` (API key) and the
dashboard's `/ui/stream/{ep}/{id}` (session cookie) serve the same events and differ only in how
they authenticate and word a 404. Parsing `Last-Event-ID`, formatting events and the wait loop
live here once, so the two cannot drift apart again (they had: a bad `Last-Event-ID` was 400 on
one and read as 0 on the other).

The events: each stream chunk as soon as it is stored (`id: <seq>`, the chunk's JSON as data),
then one `event: status` carrying the final status object, then the end of the response. A
comment line goes out after KEEPALIVE_S without news, so proxies keep an idle stream open; an
`event: error` ends the stream if the job is deleted meanwhile (its retention ran out). A client
that reconnects with `Last-Event-ID` gets only the chunks after that one. Reading this way never
moves the consuming cursor of the JSON `/stream` read. When the server stops, the stream ends at
once without its `event: status` (neuroq.api.stopping): a client that saw no status reconnects,
as after any connection lost.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

from neuroq.api.schemas import bad_request
from neuroq.api.stopping import ServerStop, server_stop
from neuroq.jobs import Job
from neuroq.store.base import JobStore, job_topic

#: an idle stream sends a comment this often, so proxies keep it open
KEEPALIVE_S = 15.0
#: 18 decimal digits always fit the stores' 64-bit sequence numbers
_MAX_ID_DIGITS = 18
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

#: what `JobStore.read_stream` returns for a known job: the job and its (seq, chunk_json) pairs
StreamRead = tuple[Job, list[tuple[int, str]]]


def last_event_id(request: Request) -> int:
    """The seq of the last event a reconnecting client saw; 0 when it sent none.

    Anything but a plain decimal number is refused (400 naming the header) rather than read as
    0, which would quietly replay the whole stream to a client that asked to resume."""
    raw = request.headers.get("last-event-id", "").strip()
    if not raw:
        return 0
    if not raw.isascii() or not raw.isdigit() or len(raw) > _MAX_ID_DIGITS:
        raise bad_request("Last-Event-ID must be the non-negative integer id of a stream event")
    return int(raw)


def format_event(data: str, *, event_id: int | None = None, event: str | None = None) -> bytes:
    """One event, ready to send. A data field cannot hold a newline, so each line of `data`
    gets its own; the receiver joins them with "\\n" again."""
    lines = []
    if event is not None:
        lines.append(f"event: {event}")
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in data.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode("utf-8")


async def job_events(
    request: Request, store: JobStore, endpoint_id: str, job_id: str
) -> StreamingResponse | None:
    """The job's event stream, resuming after the request's `Last-Event-ID`; None when the job
    is unknown, so each route answers 404 in its own words. The first read happens before the
    response starts, so an unknown job gets a plain 404 rather than a stream that ends at once."""
    after_seq = last_event_id(request)
    first = await store.read_stream(endpoint_id, job_id, after_seq=after_seq)
    if first is None:
        return None
    stop = server_stop(request, store.notifier)
    events = _events(store, stop, endpoint_id, job_id, first, after_seq)
    return StreamingResponse(events, media_type="text/event-stream", headers=_HEADERS)


async def _events(
    store: JobStore,
    stop: ServerStop,
    endpoint_id: str,
    job_id: str,
    first: StreamRead,
    after_seq: int,
) -> AsyncIterator[bytes]:
    last = after_seq

    async def fresh() -> StreamRead | None:
        read = await store.read_stream(endpoint_id, job_id, after_seq=last)
        if read is None:
            raise _Gone
        job, chunks = read
        return read if chunks or job.status.is_terminal else None

    read: StreamRead | None = first
    while True:
        if read is None:
            yield b": keepalive\n\n"
        else:
            job, chunks = read
            for seq, chunk in chunks:
                yield format_event(chunk, event_id=seq)
                last = max(last, seq)
            if job.status.is_terminal:
                yield format_event(json.dumps(job.status_object()), event="status")
                return
        try:
            read = await stop.wait_until(job_topic(job_id), fresh, KEEPALIVE_S, store.recheck_s)
        except _Gone:
            yield format_event(
                json.dumps({"error": f"job {job_id} no longer exists"}), event="error"
            )
            return
        if read is None and stop.stopping:
            return


class _Gone(Exception):
    """The job was deleted (its retention ran out) while its stream was open."""
