"""Input validation for the NeuroQ handler: one table of parameters per action.

Every check names the parameter and what is allowed, so a bad request ends FAILED with an error a
user can act on (the original accepted anything and failed late with generic Japanese text).
Unknown keys are refused instead of leaking into model construction. The tables hold checks and
aliases only: what an absent parameter means is the business of the request dataclasses
`validate()` returns (requests.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from neuroq.handler.requests import (
    Architecture,
    ClearSessionRequest,
    GenerateRequest,
    HealthRequest,
    InitRequest,
    Request,
    ResetModelRequest,
    StatusRequest,
    TrainOptions,
    TrainRequest,
)
from neuroq.model.sampling import (
    MAX_LENGTH_CAP,
    REPETITION_PENALTY_CAP,
    TEMPERATURE_CAP,
    TOP_K_CAP,
    SamplingParams,
)

ACTIONS = ("health", "status", "init", "train", "generate", "clear_session", "reset_model")
#: actions of later original revisions that downloaded data or spawned OpenAI jobs
OFFLINE_UNAVAILABLE = ("pretrain", "pretrain_openai", "pretrain_status")
MODES = ("layered", "brain")

#: a reply prompt longer than this is refused: the model sees at most a few hundred tokens anyway
MAX_PROMPT_CHARS = 4000
MAX_TEXTS = 10_000
MAX_TEXT_CHARS = 10_000
MAX_EPOCHS = 200
MAX_BATCH_SIZE = 512
#: checkpoint and session names: one path segment, so no traversal is possible (matched whole:
#: `$` would let a trailing newline through)
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
SESSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class InputError(ValueError):
    """A request parameter is missing, of the wrong type or out of range; the message names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


Check = Callable[[str, Any], Any]


def int_in(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> int:
        if not _is_int(value) or not low <= value <= high:
            raise InputError(name, f"must be an integer in [{low}, {high}], got {_show(value)}")
        return int(value)

    return check


def number_in(low: float, high: float, *, low_open: bool = False) -> Check:
    left = "(" if low_open else "["

    def check(name: str, value: Any) -> float:
        ok = _is_number(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:
            raise InputError(name, f"must be a number in {left}{low}, {high}], got {_show(value)}")
        return float(value)

    return check


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InputError(name, f"must be true or false, got {_show(value)}")
    return value


def choice(options: tuple[str, ...]) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or value not in options:
            raise InputError(name, f"must be one of {', '.join(options)}; got {_show(value)}")
        return value

    return check


def matching(pattern: re.Pattern[str], what: str) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise InputError(name, f"must be {what}, got {_show(value)}")
        return value

    return check


def prompt_text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise InputError(name, f"must be a string, got {_show(value)}")
    if not value.strip():
        raise InputError(name, "must be a non-empty string")
    if len(value) > MAX_PROMPT_CHARS:
        raise InputError(name, f"is {len(value)} characters long; the limit is {MAX_PROMPT_CHARS}")
    return value


def texts(name: str, value: Any) -> list[str | dict[str, str]]:
    """Training texts: strings (trained as replies alone) or {"user", "assistant"} pairs."""
    if not isinstance(value, list) or not value:
        raise InputError(name, "must be a non-empty list of strings or {user, assistant} objects")
    if len(value) > MAX_TEXTS:
        raise InputError(name, f"has {len(value)} entries; the limit is {MAX_TEXTS}")
    out: list[str | dict[str, str]] = []
    for i, item in enumerate(value):
        where = f"{name}[{i}]"
        if isinstance(item, str):
            if not item.strip() or len(item) > MAX_TEXT_CHARS:
                raise InputError(where, f"must be a non-empty string of at most {MAX_TEXT_CHARS}")
            out.append(item)
        elif isinstance(item, dict) and set(item) == {"user", "assistant"}:
            for key in ("user", "assistant"):
                text = item[key]
                if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_CHARS:
                    raise InputError(f"{where}.{key}", "must be a non-empty string")
            out.append({"user": item["user"], "assistant": item["assistant"]})
        else:
            raise InputError(where, "must be a string or an object with exactly user, assistant")
    return out


@dataclass(frozen=True)
class Param:
    check: Check
    #: other names the original clients send for the same parameter
    aliases: tuple[str, ...] = ()


MODEL_NAME = matching(NAME_RE, "a checkpoint name of 1-64 characters A-Z a-z 0-9 _ - (no paths)")

COMMON = {"action": Param(choice(ACTIONS)), "mode": Param(choice(MODES))}

# Each table below fills one part of a request; its names are that dataclass's field names.
MODEL_PARAMS = {  # -> Architecture
    "embed_dim": Param(int_in(4, 1024)),
    "hidden_dim": Param(int_in(4, 4096)),
    "num_neurons": Param(int_in(1, 4096)),
    "num_heads": Param(int_in(1, 64)),
    "num_layers": Param(int_in(1, 24)),
    "max_seq_len": Param(int_in(8, 2048)),
    "dropout": Param(number_in(0.0, 0.9)),
    "lambda_entangle": Param(number_in(0.0, 10.0)),
}

TRAIN_PARAMS = {  # -> TrainOptions
    "texts": Param(texts, aliases=("training_data",)),
    "epochs": Param(int_in(1, MAX_EPOCHS)),
    "batch_size": Param(int_in(1, MAX_BATCH_SIZE)),
    "learning_rate": Param(number_in(0.0, 1.0, low_open=True), aliases=("lr",)),
    "seq_length": Param(int_in(2, 2048), aliases=("seq_len",)),
    "seed": Param(int_in(0, 2**31 - 1)),
    "overwrite": Param(boolean),
    "from_model": Param(MODEL_NAME),
}

SAMPLING_PARAMS = {  # -> SamplingParams
    "max_length": Param(int_in(1, MAX_LENGTH_CAP), aliases=("max_tokens",)),
    # 0 is greedy decoding (see _sampling); the schedule bounds must stay positive.
    "temperature": Param(number_in(0.0, TEMPERATURE_CAP)),
    "temp_min": Param(number_in(0.0, TEMPERATURE_CAP, low_open=True)),
    "temp_max": Param(number_in(0.0, TEMPERATURE_CAP, low_open=True)),
    "top_k": Param(int_in(0, TOP_K_CAP)),
    "top_p": Param(number_in(0.0, 1.0, low_open=True)),
    "repetition_penalty": Param(number_in(1.0, REPETITION_PENALTY_CAP)),
    "seed": Param(int_in(0, 2**63 - 1)),
}

SESSION_ID = Param(matching(SESSION_RE, "1-128 characters A-Z a-z 0-9 _ . : -"))

GENERATE_PARAMS = {  # -> GenerateRequest itself
    "prompt": Param(prompt_text),
    **SAMPLING_PARAMS,
    "session_id": SESSION_ID,
    "stream": Param(boolean),
    "train_before_generate": Param(boolean),
}

# Per action: the parameters it accepts ("model" is also spelt "checkpoint").
SCHEMAS: dict[str, dict[str, Param]] = {
    "health": {},
    "status": {},
    "clear_session": {"session_id": SESSION_ID},
    "init": {
        "model": Param(MODEL_NAME, aliases=("checkpoint",)),
        **MODEL_PARAMS,
        "overwrite": Param(boolean),
    },
    "train": {"model": Param(MODEL_NAME, aliases=("checkpoint",)), **MODEL_PARAMS, **TRAIN_PARAMS},
    "generate": {
        "model": Param(MODEL_NAME, aliases=("checkpoint",)),
        **GENERATE_PARAMS,
        **MODEL_PARAMS,
        **{k: v for k, v in TRAIN_PARAMS.items() if k != "seed"},
    },
    "reset_model": {"model": Param(MODEL_NAME, aliases=("checkpoint",))},
}
REQUIRED = {"generate": ("prompt",), "clear_session": ("session_id",)}


def validate(raw: Any) -> Request:
    """Check a job's `input` and return the request it makes (one dataclass per action).

    Raises InputError naming the first bad parameter. Parameters the input leaves out keep the
    request dataclass's defaults; `mode` stays None unless given, so the handler can tell "use
    the checkpoint's mode" from an explicit choice.
    """
    if not isinstance(raw, Mapping):
        raise InputError("input", f"must be a JSON object, got {_show(raw)}")
    if set(raw) == {"input"}:
        # A RunPod request body sent as the input (e.g. `neuroq send @body.json`, which wraps
        # its argument in {"input": ...} itself).
        raise InputError(
            "input",
            'the job input is itself {"input": ...}: send the inner object as the input',
        )
    action = raw.get("action", "generate")
    if action in OFFLINE_UNAVAILABLE:
        raise InputError(
            "action",
            f"{action!r} is not available: it fetched training data from the internet or "
            "started an OpenAI job, and this service runs offline. Send "
            '{"action": "train", "model": "NAME"} with "texts" (or without, to train on the '
            "shipped corpus) instead",
        )
    action = COMMON["action"].check("action", action)
    schema = SCHEMAS[action]
    names: dict[str, str] = {}  # every accepted spelling -> canonical name
    for name, param in schema.items():
        names[name] = name
        for alias in param.aliases:
            names[alias] = name
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "action":
            continue
        if key == "mode":
            params["mode"] = COMMON["mode"].check("mode", value)
            continue
        canonical = names.get(key)
        if canonical is None:
            allowed = ", ".join(sorted(["action", "mode", *names]))
            raise InputError(key, f"unknown parameter for action {action!r}; allowed: {allowed}")
        if canonical in params and canonical != key:
            raise InputError(key, f"given twice (as {key!r} and as {canonical!r})")
        params[canonical] = schema[canonical].check(key, value)
    for name in REQUIRED.get(action, ()):
        if name not in params:
            raise InputError(name, f"is required for action {action!r}")
    if ("temp_min" in params) != ("temp_max" in params):
        missing = "temp_max" if "temp_min" in params else "temp_min"
        raise InputError(missing, "temp_min and temp_max must be given together")
    if "temp_min" in params and params["temp_min"] > params["temp_max"]:
        raise InputError("temp_min", f"must be <= temp_max ({params['temp_max']})")
    return _request(action, params)


def _given(params: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {name: params[name] for name in names if name in params}


def _request(action: str, params: dict[str, Any]) -> Request:
    """The dataclass for a checked action and its parameters (canonical names)."""
    if action == "health":
        return HealthRequest()
    if action == "status":
        return StatusRequest()
    if action == "clear_session":
        return ClearSessionRequest(params["session_id"])
    if action == "reset_model":
        return ResetModelRequest(**_given(params, ("model",)))
    architecture = Architecture(**_given(params, MODEL_PARAMS))
    # The model to write and how, apart from the numbers of the run itself.
    target = ("model", "mode", "overwrite", "from_model")
    training = TrainOptions(**_given(params, set(TRAIN_PARAMS) - set(target)))
    if action == "init":
        return InitRequest(**_given(params, target[:3]), architecture=architecture)
    if action == "train":
        return TrainRequest(**_given(params, target), architecture=architecture, training=training)
    return GenerateRequest(
        **_given(params, ("prompt", *target, "session_id", "stream", "train_before_generate")),
        sampling=_sampling(_given(params, SAMPLING_PARAMS)),
        architecture=architecture,
        # `seed` is the sampling seed here, and it seeds a train_before_generate run too: one
        # seed makes the whole request reproducible.
        training=training,
    )


def _sampling(values: dict[str, Any]) -> SamplingParams:
    """`temperature: 0` asks for greedy decoding, which the sampler has no temperature for (it
    divides by it): keeping only the top candidate (`top_k=1`) draws the most likely token after
    the repetition penalty whatever the seed, so the other filters and the temperature no
    longer matter."""
    if values.get("temperature") == 0:
        if "temp_min" in values:
            raise InputError(
                "temp_min",
                "cannot be combined with temperature 0 (greedy decoding); "
                "leave out temp_min and temp_max",
            )
        values = {**values, "temperature": 1.0, "top_k": 1}
    return SamplingParams(**values)
