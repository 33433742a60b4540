"""neuroq.strict_json on its own: every kind of payload JSON cannot carry is refused by `loads`
and `dumps` with a JSONRejected naming where it is, no RecursionError or UnicodeError ever
escapes, and whatever `dumps` writes `loads` reads back unchanged (a hypothesis property)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuroq.strict_json import MAX_DEPTH, JSONRejected, dumps, loads


def nested(depth: int, leaf: Any = None) -> Any:
    """`depth` levels of lists around `leaf`, built without recursion."""
    value: Any = [] if leaf is None else [leaf]
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"input": {"temperature": 1e309}}', "input.temperature: 1e309 overflows a JSON number"),
        (b'{"input": {"x": [1, -1e400]}}', "input.x[1]: -1e400 overflows a JSON number"),
        (b'{"input": {"x": NaN}}', "input.x: NaN is not valid JSON"),
        (b'{"input": -Infinity}', "input: -Infinity is not valid JSON"),
        (b'{"input": {"prompt": "\\ud800"}}', "input.prompt: a lone surrogate (\\ud800)"),
        (b'{"input": {"a": "x\\udfff"}}', "input.a: a lone surrogate (\\udfff)"),
        (b'{"input": {"\\udc00": 1}}', 'input["\\udc00"]: a lone surrogate (\\udc00) in the key'),
        (b'[1, "\\ud800"]', "body[1]: a lone surrogate"),
        (b'{"input": "\xff"}', "body: not valid UTF-8 JSON"),
        (b'{"input": ', "body: not valid JSON"),
        (b'{"a": ' + b"1" * 5000 + b"}", "body: an integer longer than"),
    ],
)
def test_loads_refuses_naming_the_path(raw: bytes, message: str) -> None:
    with pytest.raises(JSONRejected) as caught:
        loads(raw)
    assert str(caught.value).startswith(message), str(caught.value)


def test_loads_names_its_root() -> None:
    with pytest.raises(JSONRejected, match=r"^result\[0\]: 1e999 overflows"):
        loads("[1e999]", "result")


def test_loads_accepts_what_is_json() -> None:
    assert loads(b'{"s": "\\ud83d\\ude00", "e": 1e308, "t": "a\\\\ud800"}') == {
        "s": "\U0001f600",
        "e": 1e308,
        "t": "a\\ud800",  # an escaped backslash, not a surrogate
    }
    assert loads(b"\xef\xbb\xbf[1]") == [1]  # a byte order mark is ignored
    assert loads("1e-400") == 0.0  # underflow is an ordinary zero


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000, 100_000])
def test_loads_refuses_deep_nesting_without_recursion_error(depth: int) -> None:
    raw = b'{"input": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
    with pytest.raises(JSONRejected, match=rf"^input: nesting deeper than {MAX_DEPTH} levels"):
        loads(raw)


def test_loads_refuses_unclosed_deep_nesting() -> None:
    with pytest.raises(JSONRejected, match="nesting deeper"):
        loads("[" * 100_000)


def test_loads_depth_limit_is_exact_and_ignores_brackets_in_strings() -> None:
    assert loads(json.dumps(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(JSONRejected, match=r"^body\[0\]: nesting deeper"):
        loads(json.dumps(nested(MAX_DEPTH + 1)))
    # Many brackets, but inside strings: shallow.
    text = json.dumps({"s": "[{" * 500, "list": [[1]] * 500})
    assert loads(text)["s"] == "[{" * 500


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"output": {"x": math.inf}}, "output.x: inf is not a finite number"),
        ({"output": [1, math.nan]}, "output[1]: nan is not a finite number"),
        ({"output": {"s": "ok\udc80"}}, "output.s: a lone surrogate (\\udc80)"),
        ({"output": {"\ud800k": 1}}, 'output["\\ud800k"]: a lone surrogate (\\ud800) in the key'),
        ({"output": object()}, "output: a value of type object cannot be written as JSON"),
        ({"output": {1, 2}}, "output: a value of type set"),
        ({"output": [b"x"]}, "output[0]: a value of type bytes"),
        ({"output": {(1, 2): 1}}, "output: key (1, 2) is a tuple; JSON object keys must be"),
        ({"output": {math.nan: 1}}, "output.nan: nan is not a finite number"),
        ({"output": 10**5000}, "output: an integer too long"),
        ({"output": nested(MAX_DEPTH)}, f"output: nesting deeper than {MAX_DEPTH} levels"),
        ({"output": nested(1_000)}, "output: nesting deeper"),
        ({"output": nested(100_000)}, "output: nesting deeper"),
    ],
)
def test_dumps_refuses_naming_the_path(value: Any, message: str) -> None:
    with pytest.raises(JSONRejected) as caught:
        dumps(value)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_value_of_the_wrong_type_is_also_a_type_error_as_with_json() -> None:
    with pytest.raises(TypeError, match=r"^output\[0\]: a value of type set"):
        dumps({"output": [{1}]})
    with pytest.raises(TypeError, match="JSON object keys must be strings"):
        dumps({(1,): 1})


def test_dumps_refuses_a_circular_reference() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(JSONRejected, match=r"^output\[0\]: a circular reference"):
        dumps({"output": loop})


def test_dumps_is_compact_keeps_non_ascii_and_coerces_keys_like_json() -> None:
    assert dumps({"a": [1, "é"], "t": (1, 2)}) == '{"a":[1,"é"],"t":[1,2]}'
    assert dumps({1: 1, None: 2, 1.5: 3, False: 4}) == '{"1":1,"null":2,"1.5":3,"false":4}'
    assert dumps(nested(MAX_DEPTH - 1), "x") == "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)


def test_the_root_name_is_used_where_the_path_starts() -> None:
    with pytest.raises(JSONRejected, match=r"^result: inf"):
        dumps(math.inf, "result")
    with pytest.raises(JSONRejected, match=r"^result\[0\]: inf"):
        dumps([math.inf], "result")


# JSON-able values: what dumps must write and loads must read back as they were.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(st.characters(blacklist_categories=["Cs"])), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_dumps_then_loads_round_trips(value: Any) -> None:
    text = dumps(value)
    assert loads(text) == value
    assert loads(text.encode("utf-8")) == value
