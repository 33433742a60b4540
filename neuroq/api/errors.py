"""The one table that turns exceptions into HTTP responses.

Every reply the server sends, errors included, is JSON: RunPod's asyncio client decodes the body
of error replies too and raises if the content type is not `application/json`. Handlers raise;
only this module decides the status code and body:

    HTTPException (404, 405, 400 validation, 401, 413 ...) -> its status, {"error": detail}
    InvalidTransition (e.g. retry of a COMPLETED job)    -> 400, {"error": "cannot retry ..."}
    ClientDisconnect (body upload cut short)             -> 400 (nobody reads it)
    StoreUnavailable (disk full, locked, unreachable)    -> 503 + Retry-After, {"error": "the
                                                             job store is out of disk space;
                                                             retry later"}, one log line
    anything else                                         -> 500, {"error": "internal error"},
                                                             traceback logged, never sent
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from neuroq.store.base import InvalidTransition
from neuroq.store.errors import StoreUnavailable

log = logging.getLogger("neuroq.api")


def error_response(
    status_code: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse({"error": message}, status_code=status_code, headers=headers)


def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail
    # Starlette's router raises these with only the reason phrase; say what was asked for.
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.method} {request.url.path}"
    elif exc.status_code == 405 and message == "Method Not Allowed":
        allowed = (exc.headers or {}).get("Allow", "")
        message = f"method {request.method} is not allowed on {request.url.path}; use {allowed}"
    return error_response(exc.status_code, message, dict(exc.headers or {}))


def _invalid_transition(request: Request, exc: Exception) -> Response:
    return error_response(400, str(exc))


def _client_disconnect(request: Request, exc: Exception) -> Response:
    return error_response(400, "client disconnected before sending the whole body")


def _store_unavailable(request: Request, exc: Exception) -> Response:
    """503 tells clients and workers nothing was written, so they resend after Retry-After;
    reads, which need no space, keep answering meanwhile."""
    assert isinstance(exc, StoreUnavailable)
    log.warning(
        "%s %s refused: %s (%s)", request.method, request.url.path, exc, exc.__cause__ or exc
    )
    return error_response(503, str(exc), {"Retry-After": str(exc.retry_after_s)})


def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal error")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    HTTPException: _http_exception,
    InvalidTransition: _invalid_transition,
    ClientDisconnect: _client_disconnect,
    StoreUnavailable: _store_unavailable,
    Exception: _internal_error,
}
