"""Reading what a worker made of an OpenAI request back as OpenAI's wire form. Free of I/O.

Workers answer in any of worker-vllm's forms, and all of them are accepted:

- the response object itself (one yielded dict), or the list of yielded values the job's
  output becomes under `return_aggregate_stream`;
- stream chunks that are strings of raw server-sent events, `data: {chunk}\\n\\n` lines ending
  with `data: [DONE]\\n\\n` (RAW_OPENAI_OUTPUT=1), or lists of chunk dicts (RAW_OPENAI_OUTPUT=0,
  no [DONE]), or single chunk dicts;
- errors as vLLM's flat object (`{"object": "error", "message", "type", "param", "code"}`), as
  OpenAI's `{"error": {...}}`, or as the text of a FAILED job, which the RunPod SDK makes of a
  yielded `{"error": ...}` with Python's `str()` (so it may be a dict's repr rather than JSON).

Every error is answered in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
with the HTTP status its `code` names when that is one, else the status its `type` implies.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

DONE_DATA = "[DONE]"
#: vLLM names error types after HTTP reasons; OpenAI's own are in the second half
_TYPE_STATUS = {
    "BadRequestError": 400,
    "NotFoundError": 404,
    "UnprocessableEntityError": 422,
    "invalid_request_error": 400,
    "not_found_error": 404,
    "authentication_error": 401,
    "rate_limit_error": 429,
    "timeout_error": 504,
}


@dataclass(frozen=True)
class ApiError:
    """An error as OpenAI sends it: the status and the body's `error` object."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: Any = None

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class Event:
    """One server-sent event's data: a chunk's JSON text, `[DONE]`, or an error."""

    data: str
    error: ApiError | None = None

    @property
    def done(self) -> bool:
        return self.data == DONE_DATA

    def encode(self) -> bytes:
        data = json.dumps(self.error.body()) if self.error is not None else self.data
        return f"data: {data}\n\n".encode()


def error_of(value: Any) -> ApiError | None:
    """The error a worker's value stands for, or None when it is not an error."""
    if not isinstance(value, dict):
        return None
    inner = value.get("error")
    if isinstance(inner, dict):
        return _api_error(inner)
    if value.get("object") == "error" and "message" in value:
        return _api_error(value)
    if isinstance(inner, str) and inner:
        return ApiError(500, inner, "server_error")
    return None


def _api_error(fields: dict[str, Any]) -> ApiError:
    code = fields.get("code")
    kind = str(fields.get("type") or "server_error")
    status = code if isinstance(code, int) and _is_status(code) else _TYPE_STATUS.get(kind, 500)
    param = fields.get("param")
    return ApiError(
        status,
        str(fields.get("message") or "the worker reported an error"),
        kind,
        param if isinstance(param, str) else None,
        code if isinstance(code, str | int) and not isinstance(code, bool) else None,
    )


def _is_status(code: Any) -> bool:
    return isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599


def failed_error(error: Any) -> ApiError:
    """The error of a FAILED job: an OpenAI error when the worker's error holds one (as JSON,
    or as the repr the SDK writes), else a 500 carrying the worker's message."""
    value = _literal(error) if isinstance(error, str) else error
    if isinstance(value, dict):
        if isinstance(value.get("error_message"), str):
            # the runtimes' form for a raised exception: {"error_type", "error_message"}
            return ApiError(500, f"the worker failed: {value['error_message']}", "server_error")
        inner = value.get("error")
        fields = inner if isinstance(inner, dict) else value
        if isinstance(fields.get("message"), str):
            return _api_error(fields)
    text = error if isinstance(error, str) else json.dumps(error)
    return ApiError(500, f"the worker failed: {text}", "server_error")


def _literal(text: str) -> Any:
    """`text` decoded as JSON or as a Python literal (the repr `str(dict)` writes); else itself.
    `ast.literal_eval` evaluates literals only, never code."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    if text.startswith("{") and len(text) < 100_000:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return text


def response_object(output: Any) -> Any:
    """The OpenAI response object in a job's output: the output itself, or the first dict of
    the aggregated list."""
    if isinstance(output, list):
        return next((item for item in output if isinstance(item, dict)), None)
    return output


class EventReader:
    """Turns stream chunks into events. Raw SSE text may split an event across two chunks, so
    an unfinished event waits for the rest."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: Any) -> list[Event]:
        if isinstance(chunk, str):
            return self._text(chunk)
        if isinstance(chunk, list):
            return [event for item in chunk for event in self.feed(item)]
        if chunk is None:
            return []
        return [_event(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")), chunk)]

    def flush(self) -> list[Event]:
        """What is left once the stream has ended (an event without its closing blank line)."""
        rest, self._pending = self._pending, ""
        return list(_parse_events([rest])) if rest.strip() else []

    def _text(self, text: str) -> list[Event]:
        text = (self._pending + text).replace("\r\n", "\n")
        *complete, self._pending = text.split("\n\n")
        return list(_parse_events(complete))


def _parse_events(blocks: Iterable[str]) -> Iterable[Event]:
    for block in blocks:
        lines = [line[5:].removeprefix(" ") for line in block.split("\n") if line[:5] == "data:"]
        if not lines:
            continue  # comments, `event:` or `id:` alone
        data = "\n".join(lines)
        if data.strip() == DONE_DATA:
            yield Event(DONE_DATA)
            continue
        try:
            value = json.loads(data)
        except ValueError:
            yield Event(data)  # passed on as it came: it is the client's to read
            continue
        yield _event(data, value)


def _event(data: str, value: Any) -> Event:
    return Event(data, error_of(value))


def events_from_output(output: Any) -> list[Event]:
    """The events of a job that ended before anything reached its stream: its output is the
    list of what it yielded (or one value)."""
    reader = EventReader()
    values = output if isinstance(output, list) else [output]
    events = [event for value in values for event in reader.feed(value)]
    return events + reader.flush()
