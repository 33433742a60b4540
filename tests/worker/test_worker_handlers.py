"""Handler loading, kind detection and the job-done body of every return form (spec 2.6)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from neuroq import demo_handlers
from neuroq.worker import HandlerKind, HandlerLoadError, handler, load_handler
from neuroq.worker.handlers import (
    classify,
    encode,
    exception_body,
    result_body,
    stream_error,
    stream_final_body,
)


def test_demo_handlers_have_the_expected_kinds() -> None:
    cases = {
        "echo": (HandlerKind.SYNC, False),
        "noop": (HandlerKind.SYNC, False),
        "sleep": (HandlerKind.ASYNC, False),
        "fail": (HandlerKind.SYNC, False),
        "stream": (HandlerKind.ASYNC_GENERATOR, True),
        "stream_sync": (HandlerKind.GENERATOR, False),
        "progress": (HandlerKind.ASYNC, False),
    }
    for name, (kind, aggregate) in cases.items():
        loaded = load_handler(f"neuroq.demo_handlers:{name}")
        assert (loaded.kind, loaded.aggregate) == (kind, aggregate), name
        assert loaded.func is getattr(demo_handlers, name)


def test_aggregate_override_beats_the_attribute() -> None:
    assert not load_handler("neuroq.demo_handlers:stream", aggregate=False).aggregate
    assert load_handler("neuroq.demo_handlers:stream_sync", aggregate=True).aggregate


def test_handler_decorator_bare_and_with_arguments() -> None:
    @handler
    def a(job: dict[str, Any]) -> None: ...

    @handler(aggregate=True)
    def b(job: dict[str, Any]) -> Iterator[int]:
        yield 1

    assert a.return_aggregate_stream is False
    assert b.return_aggregate_stream is True


def test_classify_callable_objects_and_lambdas() -> None:
    class AsyncCallable:
        async def __call__(self, job: dict[str, Any]) -> None: ...

    class GenCallable:
        def __call__(self, job: dict[str, Any]) -> Iterator[int]:
            yield 1

    class AsyncGenCallable:
        async def __call__(self, job: dict[str, Any]) -> AsyncIterator[int]:
            yield 1

    assert classify(AsyncCallable()) is HandlerKind.ASYNC
    assert classify(GenCallable()) is HandlerKind.GENERATOR
    assert classify(AsyncGenCallable()) is HandlerKind.ASYNC_GENERATOR
    assert classify(lambda job: job) is HandlerKind.SYNC
    # Like the SDK: a function returning a generator is not a generator handler.
    assert classify(lambda job: (x for x in [1])) is HandlerKind.SYNC


def test_load_from_file_path(tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("VALUE = 41\n")
    path = tmp_path / "my_handler.py"
    path.write_text(
        "import helper_mod\n"
        "async def run(job):\n"
        "    return job['input'] + helper_mod.VALUE\n"
        "class Box:\n"
        "    @staticmethod\n"
        "    def inner(job):\n"
        "        return 1\n"
        "NOT_CALLABLE = 3\n"
    )
    loaded = load_handler(f"{path}:run")
    assert loaded.kind is HandlerKind.ASYNC
    assert load_handler(f"{path}:Box.inner").kind is HandlerKind.SYNC


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_colon_here", "expected MODULE:FUNCTION"),
        ("neuroq.demo_handlers:", "expected MODULE:FUNCTION"),
        (":echo", "expected MODULE:FUNCTION"),
        ("neuroq.no_such_module:echo", "no module named 'neuroq.no_such_module'"),
        ("neuroq.demo_handlers:missing", "'neuroq.demo_handlers' has no attribute 'missing'"),
        ("neuroq.demo_handlers:annotations", "not a callable"),
        ("/does/not/exist.py:run", "file '/does/not/exist.py' does not exist"),
    ],
)
def test_load_errors_name_what_failed(ref: str, message: str) -> None:
    with pytest.raises(HandlerLoadError, match=r"^handler ") as info:
        load_handler(ref)
    assert message in str(info.value)
    assert ref in str(info.value)


def test_load_error_for_a_file_that_raises_on_import(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("raise ImportError('needs torch')\n")
    with pytest.raises(HandlerLoadError, match="raised ImportError: needs torch"):
        load_handler(f"{path}:run")
    path2 = tmp_path / "ok.py"
    path2.write_text("x = 1\n")
    with pytest.raises(HandlerLoadError, match="'x' is a int, not a callable"):
        load_handler(f"{path2}:x")


@pytest.mark.parametrize(
    ("returned", "body"),
    [
        ({"a": 1}, {"output": {"a": 1}}),
        ("text", {"output": "text"}),
        (None, {"output": None}),
        (False, {"output": False}),
        (0, {"output": 0}),
        ([1, 2], {"output": [1, 2]}),
        ({}, {}),
        ({"error": None}, {}),
        ({"error": ""}, {}),
        ({"refresh_worker": False}, {}),
        ({"error": "bad"}, {"error": "bad"}),
        ({"error": "bad", "a": 1}, {"output": {"a": 1}, "error": "bad"}),
        ({"error": None, "a": 1}, {"output": {"a": 1}}),
        ({"refresh_worker": True, "a": 1}, {"output": {"a": 1}, "stopPod": True}),
        ({"refresh_worker": True}, {"stopPod": True}),
        ({"error": {"code": 3}, "refresh_worker": True}, {"error": {"code": 3}, "stopPod": True}),
    ],
)
def test_result_body_forms(returned: Any, body: dict[str, Any]) -> None:
    original = json.dumps(returned)
    assert result_body(returned) == body
    assert json.dumps(returned) == original  # the handler's dict is not mutated


def test_exception_body_sends_type_and_message_only() -> None:
    body = exception_body(ValueError("bad temperature"))
    assert set(body) == {"error"}
    info = json.loads(body["error"])
    assert info == {"error_type": "<class 'ValueError'>", "error_message": "bad temperature"}


def test_stream_helpers() -> None:
    assert stream_final_body([1, 2], aggregate=True) == {"output": [1, 2]}
    assert stream_final_body([1, 2], aggregate=False) == {"output": []}
    assert stream_error({"error": "boom", "x": 1}) == "boom"
    assert stream_error({"error": ""}) is None
    assert stream_error("error") is None


def test_encode_refuses_what_is_not_json() -> None:
    assert encode({"output": "é"}) == '{"output":"é"}'.encode()
    with pytest.raises(ValueError):
        encode({"output": float("nan")})
    with pytest.raises(TypeError):
        encode({"output": {1, 2}})
