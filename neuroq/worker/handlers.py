"""Loading a handler, telling its kind, and turning what it returns into job-done bodies.

Everything here is free of I/O so the RunPod body forms (docs/worker-protocol.md, job-done) can be
unit-tested on their own; `runtime.py` only sends what these functions build.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from neuroq import strict_json

#: attribute (and RunPod config key) that makes a generator's final output the list of chunks
AGGREGATE_ATTR = "return_aggregate_stream"
#: a module-level function of this name in the handler's module is its warm-up hook
WARMUP_ATTR = "warmup"

F = TypeVar("F", bound=Callable[..., Any])


class HandlerLoadError(ValueError):
    """The HANDLER reference could not be turned into a callable; the message says which part."""


class HandlerKind(StrEnum):
    """How the runtime drives a handler; detected the way the RunPod SDK detects it (docs/worker.md,
    Writing a handler)."""

    #: plain function: run in a thread so it cannot block heartbeats or stop polls
    SYNC = "sync"
    #: coroutine function: awaited as a task, cancellable
    ASYNC = "async"
    #: generator function: each yielded value is a stream chunk; runs in one thread
    GENERATOR = "generator"
    #: async generator function: each yielded value is a stream chunk, cancellable
    ASYNC_GENERATOR = "async_generator"

    @property
    def streams(self) -> bool:
        return self in (HandlerKind.GENERATOR, HandlerKind.ASYNC_GENERATOR)

    @property
    def in_thread(self) -> bool:
        return self in (HandlerKind.SYNC, HandlerKind.GENERATOR)


@dataclass(frozen=True)
class Handler:
    """A loaded handler with what the runtime needs to know about it."""

    func: Callable[..., Any]
    kind: HandlerKind
    #: generators only: send all chunks as the final output instead of []
    aggregate: bool
    #: the reference it was loaded from, for log lines
    ref: str


def handler(func: F | None = None, *, aggregate: bool = False) -> Any:
    """Mark a function as a handler; `aggregate=True` makes a generator's final output the list
    of every chunk it yielded (RunPod's `return_aggregate_stream`). Usable bare or with args."""

    def mark(f: F) -> F:
        setattr(f, AGGREGATE_ATTR, aggregate)
        return f

    return mark(func) if func is not None else mark


def classify(func: Callable[..., Any]) -> HandlerKind:
    """The kind of `func`. Like the SDK, a plain function that *returns* a generator counts as
    SYNC (its return value then fails to encode, with an error saying so)."""
    if inspect.isasyncgenfunction(func):
        return HandlerKind.ASYNC_GENERATOR
    if inspect.isgeneratorfunction(func):
        return HandlerKind.GENERATOR
    if inspect.iscoroutinefunction(func):
        return HandlerKind.ASYNC
    # Callable objects: look at their __call__ method.
    call = getattr(func, "__call__", None)  # noqa: B004 - we want the method itself
    if call is not None and not inspect.isfunction(func) and not inspect.ismethod(func):
        if inspect.isasyncgenfunction(call):
            return HandlerKind.ASYNC_GENERATOR
        if inspect.isgeneratorfunction(call):
            return HandlerKind.GENERATOR
        if inspect.iscoroutinefunction(call):
            return HandlerKind.ASYNC
    return HandlerKind.SYNC


def _import_target(target: str, ref: str, what: str) -> Any:
    """Import `target`, a dotted module name or a path to a .py file."""
    looks_like_path = target.endswith(".py") or "/" in target or "\\" in target
    if looks_like_path:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise HandlerLoadError(f"{what} {ref!r}: file {str(path)!r} does not exist")
        name = f"neuroq_handler_{path.stem}"
        loaded = sys.modules.get(name)
        if loaded is not None and getattr(loaded, "__file__", None) == str(path):
            # Handler and `--warmup` from one file share one module, so what the hook sets up
            # is what the handler sees.
            return loaded
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise HandlerLoadError(f"{what} {ref!r}: cannot import file {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        # Registered before executing so dataclasses and pickling inside the file work.
        sys.modules[name] = module
        # The file's own folder goes on the path so it can import its sibling modules.
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise HandlerLoadError(
                f"{what} {ref!r}: importing {str(path)!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name is not None and target.startswith(exc.name):
            raise HandlerLoadError(f"{what} {ref!r}: no module named {exc.name!r}") from exc
        raise HandlerLoadError(
            f"{what} {ref!r}: importing {target!r} raised ModuleNotFoundError: {exc}"
        ) from exc
    except Exception as exc:
        raise HandlerLoadError(
            f"{what} {ref!r}: importing {target!r} raised {type(exc).__name__}: {exc}"
        ) from exc


def _resolve(ref: str, what: str) -> Any:
    """The object `ref` (`module:attr` or `path/to/file.py:attr`, attr dotted) names; errors
    start with `what` and the reference, e.g. `handler 'x.py:h': file ... does not exist`."""
    target, sep, attr = ref.rpartition(":")
    # "C:\x\h.py" style paths contain a colon too; rpartition keeps them in `target`.
    if not sep or not target or not attr:
        raise HandlerLoadError(
            f"{what} {ref!r}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION"
        )
    obj: Any = _import_target(target, ref, what)
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise HandlerLoadError(f"{what} {ref!r}: {target!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise HandlerLoadError(
            f"{what} {ref!r}: {attr!r} is a {type(obj).__name__}, not a callable"
        )
    return obj


def load_handler(ref: str, aggregate: bool | None = None) -> Handler:
    """Load `module:function` or `path/to/file.py:function` (the attribute may be dotted).

    `aggregate` overrides the function's own `return_aggregate_stream` attribute when not None.
    """
    obj = _resolve(ref, "handler")
    kind = classify(obj)
    agg = bool(getattr(obj, AGGREGATE_ATTR, False)) if aggregate is None else aggregate
    return Handler(func=obj, kind=kind, aggregate=agg, ref=ref)


@dataclass(frozen=True)
class Warmup:
    """A hook run once before the worker's first take (model loading, caches), sync or async,
    called without arguments."""

    func: Callable[[], Any]
    #: where it came from, for log lines and the failure message
    ref: str

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)


def load_warmup(ref: str) -> Warmup:
    """Load the `--warmup MODULE:FUNC` hook (the same reference forms as a handler)."""
    return Warmup(_resolve(ref, "warm-up"), ref)


def module_warmup(handler: Handler) -> Warmup | None:
    """The handler module's own `warmup` callable, if it defines one at module level: the
    convention that lets a handler file bring its hook without a flag. Only plain functions
    count, so a module that merely imports some `warmup` object is left alone."""
    module = sys.modules.get(getattr(handler.func, "__module__", "") or "")
    func = getattr(module, WARMUP_ATTR, None)
    if not (inspect.isfunction(func) and func.__module__ == getattr(module, "__name__", None)):
        return None
    return Warmup(func, f"{handler.ref.rpartition(':')[0]}:{WARMUP_ATTR}")


@dataclass(frozen=True)
class Result:
    """One job-done body and the query flag it is posted with."""

    body: dict[str, Any]
    is_stream: bool = False

    @property
    def failed(self) -> bool:
        return "error" in self.body


def result_body(value: Any) -> dict[str, Any]:
    """Map a handler's return value to the job-done body the SDK would send (docs/worker.md,
    Writing a handler).

    A dict's `error` and `refresh_worker` keys are taken out: a truthy error fails the job (the
    rest, if any, is kept as output), a truthy refresh_worker adds `stopPod`. An empty dict left
    over means "no output". Any other value, None included, is the output as is.
    """
    if not isinstance(value, dict):
        return {"output": value}
    rest = dict(value)  # never mutate what the handler returned
    error = rest.pop("error", None)
    refresh = rest.pop("refresh_worker", None)
    body: dict[str, Any] = {}
    if rest:
        body["output"] = rest
    if error:
        body["error"] = error
    if refresh:
        body["stopPod"] = True
    return body


def exception_body(exc: BaseException) -> dict[str, Any]:
    """The FAILED body for a raised exception: a JSON string with `error_type` (in the SDK's
    `<class '...'>` form, so clients written for RunPod parse it alike) and `error_message`.
    The traceback is logged locally and never sent: it can reveal paths and inputs."""
    info = {"error_type": str(type(exc)), "error_message": str(exc)}
    return {"error": json.dumps(info)}


def stream_final_body(chunks: list[Any], aggregate: bool) -> dict[str, Any]:
    """The final (isStream=true) body of a generator handler that ran to its end."""
    return {"output": list(chunks) if aggregate else []}


def stream_error(chunk: Any) -> str | None:
    """A yielded dict with a truthy `error` ends the job with that error instead of streaming
    (docs/worker.md, Writing a handler); returns the error text, or None for an ordinary chunk."""
    if isinstance(chunk, dict) and chunk.get("error"):
        return str(chunk["error"])
    return None


def encode(body: dict[str, Any]) -> bytes:
    """JSON-encode a body as UTF-8 text, strictly (see neuroq.strict_json): what the server
    could not read back (NaN, infinity, a lone surrogate, nesting past the depth limit, a set)
    raises JSONRejected, a ValueError whose message names the path, e.g. `output.x: inf is not
    a finite number`. Never RecursionError or UnicodeEncodeError."""
    return strict_json.dumps(body, "body").encode()
