"""Endpoint settings: what an endpoint's workers run, and how many run when.

An endpoint that was never configured is still a plain queue (any URL-safe id works, as it always
has); configuring one lets the scaler start and stop its workers, as RunPod's endpoint settings
do. The wire shape uses RunPod's names (`workersMin`, `workersMax`, `idleTimeout`,
`scalerType`, `scalerValue`) so its documentation reads across:

- `QUEUE_DELAY`: add a worker while the oldest queued job has waited more than `scalerValue`
  seconds;
- `REQUEST_COUNT`: run `ceil((queued + running) / scalerValue)` workers.

Both stay within `workersMin`..`workersMax`; a worker idle for `idleTimeout` seconds is stopped
(down to `workersMin`, zero by default). `workersSpare` (no RunPod equivalent) keeps that many
workers started beyond the ones holding a job, so the first jobs of a burst find one ready
instead of waiting for a cold start. `inputSchema` (neuroq.input_schema) declares what a job's
`input` holds, for the dashboard's JSON request form.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from neuroq.input_schema import SchemaError, check_schema
from neuroq.jobs import EXECUTION_TIMEOUT_MAX_MS, EXECUTION_TIMEOUT_MIN_MS, is_path_safe

MAX_WORKERS = 256
MAX_IDLE_TIMEOUT_S = 24 * 3600
MAX_CONCURRENCY = 1024
MAX_SCALER_VALUE = 3600
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ScalerType(StrEnum):
    QUEUE_DELAY = "QUEUE_DELAY"
    REQUEST_COUNT = "REQUEST_COUNT"


class EndpointError(ValueError):
    """A setting out of range or of the wrong type; the message starts with the field's name."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class EndpointConfig:
    """One endpoint's settings (RunPod's defaults where RunPod has one)."""

    endpoint_id: str
    #: what a worker runs: an import path or file (`pkg.mod:handler`, `file.py:handler`) for
    #: `neuroq worker`, or ...
    handler: str | None = None
    #: ... an external command (an unmodified RunPod SDK worker, any language), given the
    #: worker environment `neuroq worker-env` prints
    command: tuple[str, ...] | None = None
    workers_min: int = 0
    workers_max: int = 3
    #: idle workers kept started beyond those holding a job (within workers_max)
    workers_spare: int = 0
    idle_timeout_s: int = 5
    scaler_type: ScalerType = ScalerType.QUEUE_DELAY
    scaler_value: int = 4
    #: jobs one worker runs at once
    concurrency: int = 1
    #: the executionTimeout of jobs submitted without one; None keeps the server's default
    execution_timeout_ms: int | None = None
    #: extra environment for the endpoint's workers
    env: dict[str, str] = field(default_factory=dict)
    #: what a job's `input` holds (neuroq.input_schema), for forms; None: not declared
    input_schema: dict[str, Any] | None = None
    created_at_ms: int = 0
    updated_at_ms: int = 0

    @property
    def runs_workers(self) -> bool:
        """Whether the scaler has anything to start for this endpoint."""
        return self.handler is not None or self.command is not None

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.endpoint_id,
            "handler": self.handler,
            "command": list(self.command) if self.command is not None else None,
            "workersMin": self.workers_min,
            "workersMax": self.workers_max,
            "workersSpare": self.workers_spare,
            "idleTimeout": self.idle_timeout_s,
            "scalerType": self.scaler_type.value,
            "scalerValue": self.scaler_value,
            "concurrency": self.concurrency,
            "executionTimeout": self.execution_timeout_ms,
            "env": dict(self.env),
            "inputSchema": self.input_schema,
            "createdAt": self.created_at_ms,
            "updatedAt": self.updated_at_ms,
        }

    def updated(self, changes: dict[str, Any]) -> EndpointConfig:
        """A copy with the wire-named `changes` applied and checked (a PATCH). Unknown keys and
        the read-only ones (`name`, `createdAt`, `updatedAt`) are refused by name."""
        values: dict[str, Any] = {}
        for key, value in changes.items():
            attr = _WIRE_FIELDS.get(key)
            if attr is None:
                known = ", ".join(sorted(_WIRE_FIELDS))
                raise EndpointError(key, f"unknown or read-only setting; settable: {known}")
            values[attr] = _CHECKS[key](key, value)
        config = replace(self, **values)
        _check_consistent(config)
        return config

    @classmethod
    def from_wire(cls, endpoint_id: str, body: dict[str, Any]) -> EndpointConfig:
        """A new endpoint's settings from a request body (missing keys take the defaults)."""
        if not is_path_safe(endpoint_id):
            raise EndpointError("name", "must be 1-128 characters of A-Z a-z 0-9 _ -")
        extra = {k: v for k, v in body.items() if k != "name"}
        if "name" in body and body["name"] != endpoint_id:
            raise EndpointError("name", f"{body['name']!r} differs from the endpoint in the path")
        return cls(endpoint_id).updated(extra)


def _int(low: int, high: int) -> Any:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise EndpointError(name, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    return check


def _handler(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or ":" not in value or not value.strip():
        raise EndpointError(
            name, f"must be MODULE:FUNCTION or FILE.py:FUNCTION (or null), got {value!r}"
        )
    return value


def _command(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(part, str) and part for part in value)
    ):
        raise EndpointError(name, "must be a non-empty list of strings (argv), or null")
    return tuple(value)


def _scaler_type(name: str, value: Any) -> ScalerType:
    try:
        return ScalerType(value)
    except ValueError:
        allowed = " or ".join(t.value for t in ScalerType)
        raise EndpointError(name, f"must be {allowed}, got {value!r}") from None


def _execution_timeout(name: str, value: Any) -> int | None:
    if value is None:
        return None
    return int(_int(EXECUTION_TIMEOUT_MIN_MS, EXECUTION_TIMEOUT_MAX_MS)(name, value))


def _env(name: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise EndpointError(name, "must be an object of NAME: value strings")
    for key, item in value.items():
        if not _ENV_NAME.fullmatch(key) or not isinstance(item, str):
            raise EndpointError(f"{name}.{key}", "names must be shell-style and values strings")
    return dict(value)


def _input_schema(name: str, value: Any) -> dict[str, Any] | None:
    try:
        return check_schema(name, value)
    except SchemaError as exc:
        raise EndpointError(exc.where, exc.message) from None


_WIRE_FIELDS = {
    "handler": "handler",
    "command": "command",
    "workersMin": "workers_min",
    "workersMax": "workers_max",
    "workersSpare": "workers_spare",
    "idleTimeout": "idle_timeout_s",
    "scalerType": "scaler_type",
    "scalerValue": "scaler_value",
    "concurrency": "concurrency",
    "executionTimeout": "execution_timeout_ms",
    "env": "env",
    "inputSchema": "input_schema",
}
#: the wire names a client may set
SETTABLE = frozenset(_WIRE_FIELDS)
_CHECKS: dict[str, Any] = {
    "handler": _handler,
    "command": _command,
    "workersMin": _int(0, MAX_WORKERS),
    "workersMax": _int(0, MAX_WORKERS),
    "workersSpare": _int(0, MAX_WORKERS),
    "idleTimeout": _int(0, MAX_IDLE_TIMEOUT_S),
    "scalerType": _scaler_type,
    "scalerValue": _int(1, MAX_SCALER_VALUE),
    "concurrency": _int(1, MAX_CONCURRENCY),
    "executionTimeout": _execution_timeout,
    "env": _env,
    "inputSchema": _input_schema,
}


def _check_consistent(config: EndpointConfig) -> None:
    if config.workers_min > config.workers_max:
        raise EndpointError(
            "workersMin", f"{config.workers_min} is more than workersMax {config.workers_max}"
        )
    if config.workers_spare > config.workers_max:
        raise EndpointError(
            "workersSpare", f"{config.workers_spare} is more than workersMax {config.workers_max}"
        )
    if config.handler is not None and config.command is not None:
        raise EndpointError("command", "give a handler or a command, not both")


def desired_workers(
    config: EndpointConfig,
    *,
    queued: int,
    running: int,
    oldest_wait_s: float,
    current: int,
    busy: int = 0,
    external: bool = False,
) -> int:
    """How many workers the endpoint should have now, by its scaler rule and its spare (before
    idle timeouts, which the scaler applies per worker: it never stops a busy one). `busy`
    counts the workers holding a job. With `external`, the workers are started by someone
    else (KEDA, an operator), so the endpoint needs no handler or command of its own to want
    them."""
    if not config.runs_workers and not external:
        return 0
    if config.scaler_type is ScalerType.REQUEST_COUNT:
        wanted = math.ceil((queued + running) / config.scaler_value)
    else:
        wanted = current + 1 if queued and oldest_wait_s > config.scaler_value else current
        # nobody to serve the queue at all: one worker at once, whatever the delay
        if queued and current == 0:
            wanted = max(wanted, 1)
    wanted = max(wanted, spare_floor(config, busy))
    return max(config.workers_min, min(config.workers_max, wanted))


def spare_floor(config: EndpointConfig, busy: int) -> int:
    """The fleet `workersSpare` asks for: the `busy` workers (holding a job) plus the spares,
    within `workersMax`; 0 without a spare."""
    if not config.workers_spare:
        return 0
    return min(config.workers_max, busy + config.workers_spare)
