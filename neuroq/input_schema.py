"""An endpoint's declared job input: the `inputSchema` setting, a small subset of JSON Schema.

The dashboard draws its JSON request form from it (one field per property), so the subset is
what a form can show: an object whose properties each have one of six types, optionally an
`enum`, a `default`, a `description` and bounds. The server does not check job inputs against
it; the handler stays the judge of its input, and the schema only says what it expects.

    {"type": "object",
     "properties": {NAME: {"type": "string" | "number" | "integer" | "boolean" | "array" |
                                   "object",
                           "enum": [...], "default": ..., "description": "...", "title": "...",
                           "minimum": n, "maximum": n, "exclusiveMinimum": n,
                           "exclusiveMaximum": n, "minLength": n, "maxLength": n}},
     "required": [NAME, ...]}

Other keywords are kept as given and ignored, so a schema written for a fuller validator still
loads. A bad schema raises `SchemaError` naming the place (`inputSchema.properties.t.type`).
"""

from __future__ import annotations

import json
import math
from typing import Any

#: the serialised schema's size limit: a form's description, not a data set
MAX_SCHEMA_BYTES = 32 * 1024
MAX_PROPERTIES = 200
MAX_NAME_CHARS = 128
MAX_TEXT_CHARS = 2000
MAX_ENUM = 200
TYPES = ("string", "number", "integer", "boolean", "array", "object")
_NUMERIC_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_LENGTH_BOUNDS = ("minLength", "maxLength")


class SchemaError(ValueError):
    """A bad part of an input schema; `where` is its dotted path from the setting's name."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def is_number(value: Any) -> bool:
    """A finite JSON number (a bool is not one, though Python says so)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def matches_type(kind: str, value: Any) -> bool:
    """Whether `value` (parsed JSON) is of the schema type `kind`."""
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return is_number(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def check_schema(where: str, value: Any) -> dict[str, Any] | None:
    """The schema as given (a copy), or None for null; SchemaError names what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SchemaError(where, 'must be an object such as {"type": "object", "properties": {}}')
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except ValueError:
        raise SchemaError(where, "must be plain JSON (no NaN or Infinity)") from None
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError(where, f"is {size} bytes as JSON; the limit is {MAX_SCHEMA_BYTES}")
    if value.get("type", "object") != "object":
        raise SchemaError(f"{where}.type", f'must be "object", got {value["type"]!r}')
    properties = value.get("properties", {})
    if not isinstance(properties, dict):
        raise SchemaError(f"{where}.properties", "must be an object of NAME: {type: ...}")
    if len(properties) > MAX_PROPERTIES:
        raise SchemaError(
            f"{where}.properties", f"has {len(properties)}; the limit is {MAX_PROPERTIES}"
        )
    for name, prop in properties.items():
        if not name or len(name) > MAX_NAME_CHARS:
            raise SchemaError(f"{where}.properties", f"names are 1-{MAX_NAME_CHARS} characters")
        _check_property(f"{where}.properties.{name}", prop)
    required = value.get("required", [])
    if (
        not isinstance(required, list)
        or not all(isinstance(name, str) and name in properties for name in required)
        or len(set(required)) != len(required)
    ):
        raise SchemaError(f"{where}.required", "must list properties, each once")
    copied: dict[str, Any] = json.loads(json.dumps(value))
    return copied


def _check_property(where: str, prop: Any) -> None:
    if not isinstance(prop, dict):
        raise SchemaError(where, "must be an object with a type")
    kind = prop.get("type")
    if kind not in TYPES:
        raise SchemaError(f"{where}.type", f"must be one of {', '.join(TYPES)}; got {kind!r}")
    for key in ("description", "title"):
        text = prop.get(key)
        if key in prop and (not isinstance(text, str) or len(text) > MAX_TEXT_CHARS):
            raise SchemaError(f"{where}.{key}", f"must be a string of at most {MAX_TEXT_CHARS}")
    for key in _NUMERIC_BOUNDS:
        if key in prop and (kind not in ("number", "integer") or not is_number(prop[key])):
            raise SchemaError(f"{where}.{key}", "must be a number, on a number or integer")
    for key in _LENGTH_BOUNDS:
        bound = prop.get(key, 0)
        if key in prop and (kind != "string" or not matches_type("integer", bound) or bound < 0):
            raise SchemaError(f"{where}.{key}", "must be a whole number >= 0, on a string")
    if "minimum" in prop and "maximum" in prop and prop["minimum"] > prop["maximum"]:
        raise SchemaError(f"{where}.minimum", f"is more than maximum {prop['maximum']}")
    if "enum" in prop:
        enum = prop["enum"]
        if not isinstance(enum, list) or not 1 <= len(enum) <= MAX_ENUM:
            raise SchemaError(f"{where}.enum", f"must be a list of 1-{MAX_ENUM} values")
        for item in enum:
            if not matches_type(kind, item):
                raise SchemaError(f"{where}.enum", f"{item!r} is not of type {kind}")
    if "default" in prop:
        _check_default(f"{where}.default", kind, prop)


def _check_default(where: str, kind: str, prop: dict[str, Any]) -> None:
    """The default is a value the property accepts: its type, its enum, its bounds."""
    default = prop["default"]
    if not matches_type(kind, default):
        raise SchemaError(where, f"{default!r} is not of type {kind}")
    if "enum" in prop and default not in prop["enum"]:
        raise SchemaError(where, f"{default!r} is not in enum")
    if kind in ("number", "integer"):
        low, high = prop.get("minimum"), prop.get("maximum")
        low_open, high_open = prop.get("exclusiveMinimum"), prop.get("exclusiveMaximum")
        if (
            (low is not None and default < low)
            or (high is not None and default > high)
            or (low_open is not None and default <= low_open)
            or (high_open is not None and default >= high_open)
        ):
            raise SchemaError(where, f"{default!r} is outside the property's bounds")
    if kind == "string" and not prop.get("minLength", 0) <= len(default) <= prop.get(
        "maxLength", len(default)
    ):
        raise SchemaError(where, "is outside minLength..maxLength")
