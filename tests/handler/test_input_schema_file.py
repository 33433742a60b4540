"""neuroq/handler/input_schema.json, the NeuroQ handler's declared `generate` input, held to the
handler itself (neuroq.handler.validation): every parameter generate accepts is a property and
no other; each stated default is the one a job without that parameter gets, and each parameter
without one is left to the model or the run; each bound is where validation starts refusing;
an input with every default filled in (what the dashboard's form sends) makes the same request
as one without; and the endpoint settings accept the file as an `inputSchema`."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from neuroq.endpoints import EndpointConfig
from neuroq.handler import validation
from neuroq.handler.requests import GenerateRequest
from neuroq.input_schema import matches_type

SCHEMA: dict[str, Any] = json.loads(
    resources.files("neuroq.handler").joinpath("input_schema.json").read_text("utf-8")
)
PROPERTIES: dict[str, dict[str, Any]] = SCHEMA["properties"]
MINIMAL = {"action": "generate", "prompt": "hi"}
#: given together or not at all
PARTNERS = {"temp_min": "temp_max", "temp_max": "temp_min"}


def generate(**params: Any) -> GenerateRequest:
    request = validation.validate({**MINIMAL, **params})
    assert isinstance(request, GenerateRequest)
    return request


def handler_default(name: str) -> Any:
    """What a generate job without `name` gets for it (None: left to the model or the run)."""
    if name in ("action", "prompt"):
        return {"action": "generate", "prompt": None}[name]
    request = generate()
    for part in (request, request.sampling, request.training, request.architecture):
        if hasattr(part, name):
            return getattr(part, name)
    raise AssertionError(f"{name} is in no part of GenerateRequest")


def accepts(name: str, value: Any) -> bool:
    params = {name: value}
    if name in PARTNERS:
        params[PARTNERS[name]] = value
    try:
        generate(**params)
    except validation.InputError as exc:
        assert exc.param in (name, PARTNERS.get(name)), exc
        return False
    return True


def test_every_generate_parameter_and_no_other() -> None:
    accepted = set(validation.SCHEMAS["generate"]) | set(validation.COMMON)
    assert set(PROPERTIES) == accepted
    assert SCHEMA["required"] == list(validation.REQUIRED["generate"])
    assert PROPERTIES["action"]["enum"] == ["generate"]
    assert PROPERTIES["mode"]["enum"] == list(validation.MODES)


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_default_is_the_handlers(name: str) -> None:
    prop = PROPERTIES[name]
    expected = handler_default(name)
    if expected is None:
        assert "default" not in prop, f"{name}: the handler has no fixed default"
    else:
        assert prop.get("default") == expected and type(prop["default"]) is type(expected), name
        assert accepts(name, prop["default"])
    assert prop.get("description"), name


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_bounds_are_where_validation_refuses(name: str) -> None:
    prop = PROPERTIES[name]
    kind = prop["type"]
    step = 1 if kind == "integer" else 1e-6
    if "minimum" in prop:
        assert accepts(name, prop["minimum"]) and not accepts(name, prop["minimum"] - step)
    if "exclusiveMinimum" in prop:
        low = prop["exclusiveMinimum"]
        assert not accepts(name, low) and accepts(name, low + step)
    if "maximum" in prop:
        assert accepts(name, prop["maximum"]) and not accepts(name, prop["maximum"] + step)
    if "maxLength" in prop:
        assert accepts(name, "a" * prop["maxLength"])
        assert not accepts(name, "a" * (prop["maxLength"] + 1))
    if kind in ("integer", "number"):
        assert not accepts(name, "1"), f"{name} takes a string"
    if kind == "boolean":
        assert accepts(name, True) and not accepts(name, 1)


def test_types_are_what_validation_accepts() -> None:
    samples = {"string": "abc", "array": ["a text"], "boolean": True}
    for name, prop in PROPERTIES.items():
        sample = prop.get("default", prop.get("enum", [None])[0])
        if sample is None:
            sample = samples.get(prop["type"], prop.get("minimum", prop.get("maximum")))
        assert matches_type(prop["type"], sample), name
        assert accepts(name, sample), (name, sample)


def test_every_default_filled_in_makes_the_same_request() -> None:
    defaults = {n: p["default"] for n, p in PROPERTIES.items() if "default" in p}
    assert {"max_length", "temperature", "stream"} <= set(defaults)
    assert generate(**defaults) == generate()


def test_the_endpoint_settings_accept_it() -> None:
    config = EndpointConfig("neuroq").updated({"inputSchema": SCHEMA})
    assert config.input_schema == SCHEMA
