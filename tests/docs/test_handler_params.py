"""docs/handler.md's action table lists every parameter the NeuroQ handler accepts, with its
default.

The handler's truth is `neuroq.handler.validation` (SCHEMAS: per action, each parameter and its
aliases) and the request dataclasses `validate()` returns, whose defaults are the ones a job
gets (for a train run, `neuroq.model.train.train`'s where the dataclass leaves None). A row may
take parameters over from another row by saying so ("model parameters as for `init`", "the
`train` parameters apply"); a parameter's default is read in the first row, along that chain,
that lists it with one.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from neuroq.handler import validation
from neuroq.handler.requests import TrainOptions
from neuroq.model.train import train

HANDLER_MD = Path(__file__).resolve().parents[2] / "docs" / "handler.md"
#: a row that takes another row's parameters over
REFERENCE = re.compile(r"as for `(\w+)`|the `(\w+)` parameters")
#: the inputs a valid request of each action needs at least
MINIMAL = {"generate": {"prompt": "hi"}, "clear_session": {"session_id": "s"}}


def action_rows(text: str) -> dict[str, str]:
    """The parameters cell of the "## Actions" table, per action its first cell names."""
    section = text.split("## Actions", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, str] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for action in re.findall(r"`(\w+)`", cells[0]):
            rows[action] = cells[1]
    return rows


ROWS = action_rows(HANDLER_MD.read_text())


def chain(action: str) -> list[str]:
    """The action, then the actions whose parameters its row takes over (depth first)."""
    order = [action]
    for match in REFERENCE.finditer(ROWS[action]):
        for name in chain(match.group(1) or match.group(2)):
            if name not in order:
                order.append(name)
    return order


def accepted(action: str) -> dict[str, tuple[str, ...]]:
    """Each parameter the action accepts and its aliases; `mode` where the request has one."""
    params = {name: param.aliases for name, param in validation.SCHEMAS[action].items()}
    if "mode" in {f.name for f in dataclasses.fields(request_type(action))}:
        params["mode"] = ()
    return params


def request_type(action: str) -> type[Any]:
    return type(validation.validate({"action": action, **MINIMAL.get(action, {})}))


def documented_default(cell: str, name: str) -> str | None:
    """What the cell says in parentheses right after `name` (or after the aliases and partner
    names joined to it by / and +); None when it names the parameter without one."""
    match = re.search(rf"`{name}`(?:[/+]`\w+`)* \(([^)]*)", cell)
    return match.group(1) if match else None


def defining_row(action: str, name: str) -> str | None:
    """The first row along the action's chain that lists `name` with a default (a row may name
    a parameter in passing, as train's names `max_seq_len` in `seq_length`'s limit)."""
    return next((row for row in chain(action) if documented_default(ROWS[row], name)), None)


def expected_defaults(action: str) -> dict[str, str]:
    """The defaults a job of this action gets, as the docs write them (true, 0.7, layered), for
    every parameter whose default is a plain value; None ones (random, the model's, ...) are
    described in words and not compared."""
    request = request_type(action)
    library = {  # train()'s defaults, for the TrainOptions fields left None
        name: param.default
        for name, param in inspect.signature(train).parameters.items()
        if param.default is not inspect.Parameter.empty
    }
    # which of train()'s names each TrainOptions field is passed as (lr for learning_rate...)
    probe = {f.name: 1000 + i for i, f in enumerate(dataclasses.fields(TrainOptions))}
    probe.pop("texts")
    passed_as = {
        probe[field]: lib
        for lib, value in TrainOptions(**probe).train_kwargs().items()
        for field in probe
        if probe[field] == value
    }
    values: dict[str, Any] = {}

    def take(instance: Any, fallback: dict[str, Any] | None = None) -> None:
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if value is None and fallback is not None:
                value = fallback.get(passed_as.get(probe.get(f.name, -1), ""))
            if value is None:
                values.pop(f.name, None)
            elif isinstance(value, bool | int | float | str):
                values[f.name] = value

    defaults = request(**MINIMAL.get(action, {}))
    if hasattr(defaults, "training"):
        take(defaults.training, library)
    if hasattr(defaults, "sampling"):
        take(defaults.sampling)  # after training: generate's `seed` is the sampling seed
    take(defaults)
    shown = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in values.items()
        if name in accepted(action)
    }
    for name in validation.REQUIRED.get(action, ()):
        shown[name] = "required"
    return shown


def test_every_action_has_a_row() -> None:
    assert set(ROWS) == {*validation.ACTIONS, *validation.OFFLINE_UNAVAILABLE}


@pytest.mark.parametrize("action", validation.ACTIONS)
def test_every_parameter_and_alias_is_listed_with_a_default(action: str) -> None:
    missing, without_default = [], []
    for name, aliases in accepted(action).items():
        if not any(f"`{name}`" in ROWS[row] for row in chain(action)):
            missing.append(name)
            continue
        row = defining_row(action, name)
        if row is None:
            without_default.append(name)
            continue
        missing += [
            f"{name}/{alias}" for alias in aliases if f"`{name}`/`{alias}`" not in ROWS[row]
        ]
    assert missing == [] and without_default == []


@pytest.mark.parametrize("action", validation.ACTIONS)
def test_documented_defaults_are_the_handlers(action: str) -> None:
    wrong = {}
    for name, value in expected_defaults(action).items():
        row = defining_row(action, name)
        shown = documented_default(ROWS[row], name) or "" if row is not None else ""
        first = re.split(r"[,;]", shown, maxsplit=1)[0].replace("`", "").strip()
        if first != value:
            wrong[name] = (shown, value)
    assert wrong == {}


def test_every_alias_pair_in_the_table_is_one() -> None:
    """No `name`/`other` in the table that the handler does not take as the same parameter."""
    known = {
        (name, alias)
        for schema in validation.SCHEMAS.values()
        for name, param in schema.items()
        for alias in param.aliases
    }
    pairs = {pair for cell in ROWS.values() for pair in re.findall(r"`(\w+)`/`(\w+)`", cell)}
    assert pairs - known == set()


def test_the_checks_see_a_missing_parameter_and_a_wrong_default() -> None:
    cell = "`model`/`checkpoint` (`default`), `epochs` (7, 1-200), `seed`, `stream` (true)"
    assert documented_default(cell, "model") == "`default`"
    assert documented_default(cell, "epochs") == "7, 1-200"
    assert documented_default(cell, "seed") is None
    assert expected_defaults("train")["epochs"] == "5"
    assert expected_defaults("train")["learning_rate"] == "0.001"
    assert expected_defaults("generate")["stream"] == "true"
    assert "seed" not in expected_defaults("generate")  # random: described in words
    assert expected_defaults("generate")["prompt"] == "required"
