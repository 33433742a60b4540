"""Request shapes of the client API and their validation.

Each check raises `HTTPException(400)` whose message names the field and what is allowed, so a
client sees `policy.ttl must be an integer number of milliseconds between 10000 and 604800000`
rather than a stack trace. Unknown keys (top level and in `policy`) are ignored, as RunPod does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request

from neuroq import strict_json
from neuroq.jobs import (
    EXECUTION_TIMEOUT_DEFAULT_MS,
    EXECUTION_TIMEOUT_MAX_MS,
    EXECUTION_TIMEOUT_MIN_MS,
    TTL_DEFAULT_MS,
    TTL_MAX_MS,
    TTL_MIN_MS,
    Policy,
)

MAX_WEBHOOK_URL_LEN = 2048
MAX_IDEMPOTENCY_KEY_LEN = 256


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


@dataclass(frozen=True)
class SubmitRequest:
    """A validated /run or /runsync body, JSON payloads re-encoded compactly for the store."""

    input_json: str
    policy: Policy
    webhook: str | None
    s3_config_json: str | None


class BodyTooLarge(Exception):
    """The request body passed its size limit (found without reading the rest)."""


async def read_capped(request: Request, limit_bytes: int) -> bytes:
    """The raw body, raising BodyTooLarge as soon as it passes `limit_bytes`, judged from
    Content-Length and again while reading, so a lying or absent Content-Length cannot make us
    buffer more than the limit. Shared by client and worker routes."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > limit_bytes:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body_limited(request: Request, limit_bytes: int) -> bytes:
    """The request body for a client route: 400 for a malformed Content-Length, 413 over the
    limit."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise bad_request("Content-Length must be a non-negative integer")
    try:
        return await read_capped(request, limit_bytes)
    except BodyTooLarge:
        raise HTTPException(413, f"request body exceeds the limit of {limit_bytes} bytes") from None


def reject_constant(name: str) -> Any:
    """json.loads hook: NaN and Infinity are not JSON, whatever Python accepts."""
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a body that must be a JSON object, strictly (see neuroq.strict_json): a number
    that overflows, NaN, a lone surrogate or nesting past the depth limit is refused here with
    the field named, because once stored it would poison every later reader of the payload."""
    if not body.strip():
        raise bad_request("body must be a JSON object; the body is empty")
    try:
        value = strict_json.loads(body, "body")
    except strict_json.JSONRejected as exc:
        raise bad_request(str(exc)) from None
    if not isinstance(value, dict):
        raise bad_request("body must be a JSON object")
    return value


def _int_ms(value: Any, field: str, low: int, high: int) -> int:
    rule = f"{field} must be an integer number of milliseconds between {low} and {high}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(rule)
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise bad_request(rule)
        value = int(value)
    if not low <= value <= high:
        raise bad_request(f"{rule}; got {value}")
    return value


def parse_policy(value: Any) -> Policy:
    if value is None:
        return Policy()
    if not isinstance(value, dict):
        raise bad_request("policy must be an object with executionTimeout, ttl and lowPriority")
    execution_timeout_ms = EXECUTION_TIMEOUT_DEFAULT_MS
    ttl_ms = TTL_DEFAULT_MS
    low_priority = False
    if value.get("executionTimeout") is not None:
        execution_timeout_ms = _int_ms(
            value["executionTimeout"],
            "policy.executionTimeout",
            EXECUTION_TIMEOUT_MIN_MS,
            EXECUTION_TIMEOUT_MAX_MS,
        )
    if value.get("ttl") is not None:
        ttl_ms = _int_ms(value["ttl"], "policy.ttl", TTL_MIN_MS, TTL_MAX_MS)
    if value.get("lowPriority") is not None:
        if not isinstance(value["lowPriority"], bool):
            raise bad_request("policy.lowPriority must be true or false")
        low_priority = value["lowPriority"]
    return Policy(
        execution_timeout_ms=execution_timeout_ms,
        ttl_ms=ttl_ms,
        low_priority=low_priority,
        execution_timeout_explicit=value.get("executionTimeout") is not None,
    )


def parse_webhook(value: Any, field: str) -> str | None:
    rule = f"{field} must be an http:// or https:// URL string"
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(rule)
    if len(value) > MAX_WEBHOOK_URL_LEN:
        raise bad_request(f"{field} must be at most {MAX_WEBHOOK_URL_LEN} characters")
    if any(c.isspace() or not c.isprintable() for c in value):
        raise bad_request(f"{rule} without spaces or control characters")
    try:
        parts = urlsplit(value)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise bad_request(rule) from None
    if parts.scheme.lower() not in ("http", "https") or not host:
        raise bad_request(rule)
    return value


def parse_submit(body: dict[str, Any]) -> SubmitRequest:
    """Validate a /run or /runsync body (docs/api.md, Submitting and JSON limits)."""
    if "input" not in body:
        raise bad_request("input is required (any JSON value, normally an object)")
    webhook = parse_webhook(body.get("webhook"), "webhook")
    webhook_v2 = parse_webhook(body.get("webhookV2"), "webhookV2")
    s3_config = body.get("s3Config")
    if s3_config is not None and not isinstance(s3_config, dict):
        raise bad_request("s3Config must be an object (accessId, accessSecret, bucketName, ...)")
    return SubmitRequest(
        input_json=_dumps(body["input"]),
        policy=parse_policy(body.get("policy")),
        webhook=webhook or webhook_v2,
        s3_config_json=None if s3_config is None else _dumps(s3_config),
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def parse_wait_ms(request: Request, default_ms: int, low_ms: int, high_ms: int) -> int:
    """The `?wait=` query parameter in milliseconds, clamped into [low_ms, high_ms]."""
    return _clamp(_query_int(request, "wait", default_ms), low_ms, high_ms)


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An optional integer query parameter within [low, high]; `default` when absent or empty."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return int(raw)


def parse_query_ms(request: Request, name: str) -> int | None:
    """An optional non-negative integer query parameter in milliseconds."""
    raw = request.query_params.get(name)
    if raw is None or not raw.strip():
        return None
    return _query_int(request, name, 0)


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise bad_request(f"{name} must be a non-negative integer number of milliseconds")
    return int(text)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def parse_idempotency_key(request: Request) -> str | None:
    raw = request.headers.get("idempotency-key")
    if raw is None:
        return None
    key = raw.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LEN:
        raise bad_request(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} characters")
    return key
