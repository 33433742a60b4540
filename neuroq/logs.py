"""Logging for `neuroq serve` and `neuroq worker`: one line per event, plain text or JSON.

`configure_logging(settings)` sends every logger (uvicorn's included, when uvicorn is told not to
install its own handlers) through one stderr handler. With `NEUROQ_LOG_FORMAT=json` each line is
one JSON object with `ts`, `level`, `logger`, `msg`, plus `job_id`, `endpoint_id` and `worker_id`
when a call passes them through `extra=`, and `exc` for a traceback; otherwise lines read
`2024-05-01T12:00:00.123Z INFO neuroq.api: msg job_id=...`.

What is never logged: job inputs and outputs (no neuroq code passes them to a logger; messages
carry ids, states and sizes), and API keys. Keys are also redacted defensively: the handler's
filter replaces every configured key found in a message, an argument or a traceback with
`[REDACTED]`, so a key pasted into a URL or an exception message cannot reach the log either.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from neuroq.config import Settings

#: fields copied from `extra=` into each line when present
CONTEXT_FIELDS = ("job_id", "endpoint_id", "worker_id")
REDACTED = "[REDACTED]"
#: keys shorter than this are not redacted: replacing a 3-letter word everywhere would garble
#: every line, and a key that short offers no protection worth keeping anyway
MIN_SECRET_LEN = 6
FORMATS = ("text", "json")

_secrets: set[str] = set()


def add_secrets(values: Iterable[str]) -> None:
    """Redact these values from every log line from now on (keys generated at startup)."""
    _secrets.update(v for v in values if len(v) >= MIN_SECRET_LEN)


def redact(text: str) -> str:
    # Longest first, so a key containing another key is removed whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message (arguments merged in) and traceback without the secrets."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        record.msg, record.args = redact(message), None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, redact(value))
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {
        name: getattr(record, name)
        for name in CONTEXT_FIELDS
        if getattr(record, name, None) is not None
    }


def _traceback(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [p for p in (record.exc_text, record.stack_info) if p]
    return "\n".join(parts) if parts else None


class JSONFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes into the `exc` field, never onto new lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if (trace := _traceback(self, record)) is not None:
            line["exc"] = trace
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`TS LEVEL logger: msg key=value ...`; a traceback follows on its own lines."""

    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(f"{k}={v}" for k, v in _context(record).items())
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if context:
            line += " " + context
        if (trace := _traceback(self, record)) is not None:
            line += "\n" + trace
        return line


def make_handler(log_format: str, stream: TextIO | None = None) -> logging.Handler:
    if log_format not in FORMATS:
        raise ValueError(f"NEUROQ_LOG_FORMAT={log_format!r}: expected one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(RedactSecrets())
    return handler


def parse_level(level: str) -> int:
    value = logging.getLevelName(level.strip().upper())
    if not isinstance(value, int):
        raise ValueError(
            f"NEUROQ_LOG_LEVEL={level!r}: expected DEBUG, INFO, WARNING, ERROR or CRITICAL"
        )
    return value


def configure_logging(
    settings: Settings, *, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> None:
    """Route every log record through one handler in the configured format.

    Replaces the root logger's handlers (calling it twice does not double lines), lets
    uvicorn's loggers propagate to it, and redacts the configured keys plus `secrets`.
    Raises ValueError naming the setting when the format or level is unknown."""
    handler = make_handler(settings.log_format, stream)
    level = parse_level(settings.log_level)
    add_secrets([*settings.api_keys, *settings.worker_keys, *secrets])
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # httpx logs every request URL at INFO: noisy, and webhook URLs can carry secrets.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
