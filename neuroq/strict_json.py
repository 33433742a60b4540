"""Strict JSON for every payload that crosses the API: what one side writes, the other can read.

Python's json module accepts and writes things other JSON readers refuse or choke on: `NaN` and
`Infinity`, numbers such as `1e309` that silently become infinity, strings holding lone
surrogates (which no UTF-8 encoder can write), and nesting deep enough to raise RecursionError.
A payload like that, once stored, fails later, far from whoever sent it. `loads` and `dumps`
refuse all of them up front with `JSONRejected`, whose message names where the bad value is.

Paths start at the root's members: `input.temperature`, `output.items[3]`, `input["a b"]`. The
root's own name (`what`) is written only where the path would otherwise be empty or begin with
a bracket: `body`, `body[0]`. A nesting error names only the first step of its path (`input`),
since the full one is a hundred steps long.

Depth counts the whole document: `[]` is one level, `{"input": []}` two. So inside a
`{"input": ...}` or `{"output": ...}` envelope the payload itself has `MAX_DEPTH - 1` levels.

The decoded value is walked (in Python, to name the path) only once a problem is known: an
overflow or NaN seen by json.loads' hooks, or a cheap scan of the text (`str.count`, `re`,
`str.translate`, all in C) that finds a possible surrogate or deep nesting. Ordinary payloads
skip the walk.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from itertools import accumulate, repeat
from typing import Any

#: the deepest nesting any JSON document crossing the API may have (whole document counted)
MAX_DEPTH = 100

_SURROGATE = re.compile("[\ud800-\udfff]")
# A \u escape of a surrogate (pairs are fine, but telling them apart needs the decoded text),
# or a surrogate character in a str given to loads.
_MAYBE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# str.translate table deleting the ASCII characters other than brackets
_ONLY_BRACKETS = {i: None for i in range(128) if chr(i) not in "[]{}"}
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
_CLOSING = {"[": "]", "{": "}"}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
#: longest key or literal quoted in a message
_QUOTE_MAX = 64


class JSONRejected(ValueError):
    """A payload that is not strict JSON or breaks our limits; the message names where."""


class JSONTypeRejected(JSONRejected, TypeError):
    """A value or key of a type JSON has no form for. Also a TypeError, as json.dumps raises,
    so callers written against json keep working."""


class _Constant:
    """What loads puts where NaN or Infinity stood, so the walk can find it."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Overflow(float):
    """What loads puts where a number overflowed to infinity; keeps the number as written."""

    literal: str


class _Pairs(list[tuple[str, Any]]):
    """An object decoded as its key/value pairs, to name the right key of a truncated text."""


def loads(raw: bytes | str, what: str = "body") -> Any:
    """Decode strict JSON. `raw` as bytes must be UTF-8 (a leading byte order mark is ignored).

    Raises JSONRejected for invalid UTF-8, a syntax error, NaN/Infinity, a number that overflows
    a double, a lone surrogate, or nesting deeper than MAX_DEPTH; `what` names the root in the
    message (see the module docstring for how paths are written).
    """
    if isinstance(raw, bytes | bytearray | memoryview):
        try:
            text = bytes(raw).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JSONRejected(
                f"{what}: not valid UTF-8 JSON ({exc.reason} at byte {exc.start})"
            ) from None
    else:
        text = raw
    if _too_deep(text):
        raise JSONRejected(f"{_deep_path(text, what)}: nesting deeper than {MAX_DEPTH} levels")
    flagged: list[str] = []

    def constant(name: str) -> _Constant:
        flagged.append(name)
        return _Constant(name)

    def number(literal: str) -> float:
        value = float(literal)
        if not math.isinf(value):
            return value
        flagged.append(literal)
        overflow = _Overflow(value)
        overflow.literal = literal
        return overflow

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise JSONRejected(f"{what}: not valid JSON: {exc}") from None
    except RecursionError:
        # Not reached after _too_deep, but a RecursionError must never escape.
        raise JSONRejected(f"{what}: nesting deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # the only other ValueError json raises: an integer past the limit
        raise JSONRejected(
            f"{what}: an integer longer than {sys.get_int_max_str_digits()} digits"
        ) from None
    if flagged or _MAYBE_SURROGATE.search(text):
        problem = _walk(value, [], 1, set())
        if problem is not None:
            raise problem.error(what)
    return value


def dumps(value: Any, what: str = "output") -> str:
    """Encode compactly as strict JSON text (non-ASCII written as is, for UTF-8).

    Like json.dumps, tuples become arrays and int, float, bool and None keys become strings.
    Raises JSONRejected naming the path for a non-finite float, a lone surrogate, nesting deeper
    than MAX_DEPTH, a circular reference, or a value or key of a type JSON has no form for.
    """
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (ValueError, TypeError, RecursionError) as exc:
        problem = _walk(value, [], 1, set())
        if problem is None:
            raise JSONRejected(f"{what}: cannot be written as JSON: {exc}") from None
        raise problem.error(what) from None
    if _SURROGATE.search(text) or _too_deep(text):
        problem = _walk(value, [], 1, set())
        if problem is not None:
            raise problem.error(what)
    return text


def _too_deep(text: str) -> bool:
    """Whether the text nests deeper than MAX_DEPTH (brackets inside strings not counted)."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _STRING.sub("", text).translate(_ONLY_BRACKETS)
    # Anything but a bracket left over (only in text that is not JSON) counts as 0.
    return max(accumulate(map(_DELTA.get, brackets, repeat(0))), default=0) > MAX_DEPTH


def _deep_path(text: str, what: str) -> str:
    """The first path step towards the first place the text nests too deep: the text is cut
    there, closed, and decoded (now shallow enough) to read that step."""
    stack: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in _CLOSING:
            if len(stack) == MAX_DEPTH:
                closing = "".join(_CLOSING[c] for c in reversed(stack))
                cut = text[: match.start()] + "0" + closing
                break
            stack.append(token)
        elif token in ("]", "}") and stack:
            stack.pop()
    else:
        return what
    try:
        root = json.loads(cut, object_pairs_hook=_Pairs)
    except ValueError:
        return what
    if isinstance(root, _Pairs) and root:
        return _path(what, [root[-1][0]])
    if isinstance(root, list) and root:
        return _path(what, [len(root) - 1])
    return what


@dataclass(frozen=True)
class _Problem:
    """Where the walk found something JSON cannot carry, and what."""

    parts: list[str | int]
    message: str
    #: a value or key of a type JSON has no form for (json.dumps raises TypeError for these)
    wrong_type: bool = False

    def error(self, what: str) -> JSONRejected:
        kind = JSONTypeRejected if self.wrong_type else JSONRejected
        return kind(f"{_path(what, self.parts)}: {self.message}")


def _walk(value: Any, parts: list[str | int], depth: int, seen: set[int]) -> _Problem | None:
    """The first value, in document order, that strict JSON cannot carry. Recursion stops at
    MAX_DEPTH + 1 levels, so it is safe on any input, circular ones included."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        return _string_problem(value, parts)
    if isinstance(value, int):
        try:
            int.__repr__(value)
        except ValueError:
            return _Problem(parts, "an integer too long to write as text")
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        if isinstance(value, _Overflow):
            message = f"{_clip(value.literal)} overflows a JSON number (must be finite)"
            return _Problem(parts, message)
        return _Problem(parts, f"{value!r} is not a finite number (JSON has no NaN or infinity)")
    if isinstance(value, _Constant):
        return _Problem(parts, f"{value.name} is not valid JSON (numbers must be finite)")
    if not isinstance(value, dict | list | tuple):
        return _Problem(
            parts, f"a value of type {type(value).__name__} cannot be written as JSON", True
        )
    if depth > MAX_DEPTH:
        return _Problem(parts[:1], f"nesting deeper than {MAX_DEPTH} levels")
    if id(value) in seen:
        return _Problem(parts, "a circular reference (a container inside itself)")
    seen.add(id(value))
    try:
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str):
                    problem = _string_problem(key, [*parts, key], "the key")
                elif key is None or isinstance(key, int | float):
                    problem = _walk(key, [*parts, str(key)], depth, seen)
                else:
                    problem = _Problem(
                        parts,
                        f"key {_clip(repr(key))} is a {type(key).__name__}; "
                        "JSON object keys must be strings",
                        True,
                    )
                if problem is None:
                    problem = _walk(item, [*parts, _key_step(key)], depth + 1, seen)
                if problem is not None:
                    return problem
        else:
            for index, item in enumerate(value):
                problem = _walk(item, [*parts, index], depth + 1, seen)
                if problem is not None:
                    return problem
    finally:
        seen.discard(id(value))
    return None


def _key_step(key: Any) -> str:
    """A dict key as json.dumps writes it, for paths."""
    if isinstance(key, str):
        return key
    return json.dumps(key) if key is None or isinstance(key, bool) else str(key)


def _string_problem(text: str, parts: list[str | int], what: str = "") -> _Problem | None:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    where = f" in {what}" if what else ""
    escape = f"\\u{ord(match.group()):04x}"
    return _Problem(parts, f"a lone surrogate ({escape}){where} is not valid Unicode")


def _path(what: str, parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _NAME.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(_clip(part))}]"  # ASCII, surrogates escaped
    if not out or out.startswith("["):
        out = what + out
    return out


def _clip(text: str) -> str:
    return text if len(text) <= _QUOTE_MAX else text[: _QUOTE_MAX - 3] + "..."
