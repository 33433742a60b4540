"""Exceptions raised by the NeuroQ client.

    NeuroQError
     └── ClientError
          ├── ConfigurationError
          ├── TransportError
          ├── APIError (status_code, body)
          │    ├── AuthenticationError   401
          │    ├── NotFoundError         404
          │    └── RequestRejected       400, 413
          ├── JobFailed (job_id, status, error)
          └── JobTimeout (job_id, last_status)

Transient trouble (connection errors, 429, 5xx) is retried inside the client; these are raised
only once retrying cannot help. `send_and_wait` never raises `JobFailed` or `JobTimeout`: it turns
them into `{"error": ...}` as the users' guide promises.
"""

from __future__ import annotations

from typing import Any


class NeuroQError(Exception):
    """Root of every error NeuroQ raises on purpose."""


class ClientError(NeuroQError):
    """The client could not do what was asked."""


class ConfigurationError(ClientError, ValueError):
    """A setting the client needs (endpoint id, base URL) is missing or malformed."""


class TransportError(ClientError):
    """The server could not be reached, or the connection broke, even after retries."""


class APIError(ClientError):
    """The server answered with an error status; `body` is its parsed JSON (or raw text)."""

    def __init__(self, status_code: int, body: Any, message: str | None = None) -> None:
        self.status_code = status_code
        self.body = body
        if message is None:
            detail = body.get("error") if isinstance(body, dict) else body
            message = f"HTTP {status_code}: {detail}"
        super().__init__(message)


class AuthenticationError(APIError):
    """The API key was missing or refused (401)."""


class NotFoundError(APIError):
    """The endpoint or job does not exist, or the job's record has expired (404)."""


class RequestRejected(APIError):
    """The server refused the request as malformed or too large (400, 413)."""


class JobFailed(ClientError):
    """The job ended FAILED, CANCELLED or TIMED_OUT; `error` is what the server reported."""

    def __init__(self, job_id: str, status: str, error: Any) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        super().__init__(f"job {job_id} ended {status}: {error}")


class JobTimeout(ClientError):
    """The job was not finished when the caller's timeout ran out; it may still finish later."""

    def __init__(self, job_id: str, timeout_s: float, last_status: dict[str, Any] | None) -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.last_status = last_status
        state = last_status.get("status", "unknown") if last_status else "unknown"
        super().__init__(f"job {job_id} not finished after {timeout_s:g} s (last status {state})")
