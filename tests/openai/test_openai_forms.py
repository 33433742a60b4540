"""The I/O-free parts of the OpenAI path, in-process: checking request bodies (openai_requests),
laying out chat prompts, cutting replies at stop strings and counting their tokens
(openai_text), and the server's reading of every form a worker may answer in (openai_events):
raw SSE split across chunks, lists of chunk dicts, and errors as vLLM's flat object, OpenAI's
nested one, or the repr the RunPod SDK makes of a yielded error."""

from __future__ import annotations

import json
from typing import Any

import pytest

from neuroq.api.openai_events import EventReader, error_of, events_from_output, failed_error
from neuroq.handler.openai_requests import (
    ChatRequest,
    CompletionRequest,
    Message,
    ModelsRequest,
    OpenAIError,
    parse_openai,
)
from neuroq.handler.openai_text import StopText, chat_prompt_ids, tokens_until
from neuroq.model.tokenizer import ASSISTANT_ID, BOS_ID, EOS_ID, USER_ID

CHAT = "/v1/chat/completions"
ASSISTANT = {"role": "assistant", "content": "b"}


def chat(**body: Any) -> dict[str, Any]:
    body.setdefault("model", "default")
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    return {"openai_route": CHAT, "openai_input": body}


def test_a_chat_request_takes_openai_meanings() -> None:
    request = parse_openai(chat(max_tokens=9, temperature=0.5, seed=3, n=2, stop="x"))
    assert isinstance(request, ChatRequest)
    sampling = request.options.sampling
    assert (sampling.max_length, sampling.seed) == (9, 3)
    assert sampling.temperature_range == (0.5, 0.5)  # constant, no schedule
    assert (sampling.top_k, sampling.top_p, sampling.repetition_penalty) == (0, 1.0, 1.0)
    assert request.options.stop == ("x",)
    assert request.options.sampling_for(1).seed == 4


def test_temperature_zero_is_greedy() -> None:
    request = parse_openai(chat(temperature=0, top_p=0.3))
    assert isinstance(request, ChatRequest)
    assert request.options.sampling.top_k == 1


def test_other_routes() -> None:
    assert parse_openai({"openai_route": "/v1/models"}) == ModelsRequest()
    request = parse_openai(
        {"openai_route": "/v1/completions", "openai_input": {"model": "m", "prompt": ["a", "b"]}}
    )
    assert isinstance(request, CompletionRequest) and request.prompts == ("a", "b")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": 151}, "max_completion_tokens"),
        ({"n": 17}, "n"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"functions": []}, "functions"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": "a"}, ASSISTANT]}, "messages"),
        ({"model": 3}, "model"),
    ],
)
def test_bad_parameters_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_openai(chat(**body))
    error = caught.value.error_object()
    assert error["param"] == param and error["code"] == 400 and error["object"] == "error"


def test_neutral_values_of_unsupported_parameters_pass() -> None:
    parse_openai(chat(presence_penalty=0, logprobs=False, tools=[], response_format=None))


class Chars:
    """A tokenizer with one id per character (ids from 100 up), enough for layouts and counts."""

    def encode(self, text: str) -> list[int]:
        return [100 + ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 100) for i in ids if i >= 100)

    @property
    def vocab_size(self) -> int:
        return 1 << 20


def test_chat_layout_matches_the_training_records() -> None:
    tok = Chars()
    messages = [
        Message("system", "s"),
        Message("user", "a"),
        Message("assistant", "b"),
        Message("user", "c"),
        Message("user", "d"),
    ]
    ids = chat_prompt_ids(tok, messages)
    assert ids == [
        *[BOS_ID, *tok.encode("s"), EOS_ID],
        *[BOS_ID, USER_ID, *tok.encode("a"), ASSISTANT_ID, *tok.encode("b"), EOS_ID],
        *[BOS_ID, USER_ID, *tok.encode("c\nd"), ASSISTANT_ID],
    ]


def test_stop_text_holds_back_a_possible_start_and_cuts_at_the_stop() -> None:
    stop = StopText(["END", "。"])
    sent = [stop.push(p) for p in ["abc E", "N", "xyz EN", "D tail"]]
    assert sent == ["abc ", "", "ENxyz ", ""]
    assert stop.stopped and stop.reply() == "abc ENxyz "
    assert stop.cut_end == len("abc ENxyz END")
    assert stop.push("more") == "" and stop.finish() == ""
    plain = StopText(["END"])
    assert plain.push("abE") == "ab" and plain.finish() == "E" and not plain.stopped


def test_completion_tokens_count_up_to_the_stop_string() -> None:
    tok = Chars()
    ids = tok.encode("hello. more")
    assert tokens_until(tok, ids, len("hello.")) == 6
    assert tokens_until(tok, ids, 0) == 0


def sse(*chunks: Any) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)


def test_reader_joins_events_split_across_chunks() -> None:
    text = sse({"n": 1}, {"n": 2}) + "data: [DONE]\n\n"
    reader = EventReader()
    events = reader.feed(text[:10]) + reader.feed(text[10:40]) + reader.feed(text[40:])
    assert [e.data for e in events] == ['{"n": 1}', '{"n": 2}', "[DONE]"]
    assert events[-1].done and reader.flush() == []


def test_reader_takes_lists_of_dicts_and_single_dicts() -> None:
    reader = EventReader()
    events = reader.feed([{"n": 1}, {"n": 2}]) + reader.feed({"n": 3})
    assert [json.loads(e.data)["n"] for e in events] == [1, 2, 3]
    assert [json.loads(e.data) for e in events_from_output([sse({"n": 4})])] == [{"n": 4}]


def test_every_error_form_becomes_openai_shape() -> None:
    flat = {"object": "error", "message": "no model", "type": "NotFoundError", "code": 404}
    assert error_of(flat) is not None and error_of(flat).status == 404  # type: ignore[union-attr]
    nested = {"error": {"message": "bad", "type": "invalid_request_error", "param": "n"}}
    error = error_of(nested)
    assert error is not None and (error.status, error.param) == (400, "n")
    assert error_of({"choices": []}) is None
    # The RunPod SDK turns a yielded {"error": {...}} into str(dict) on a FAILED job.
    sdk = str({"message": "gone", "type": "BadRequestError", "param": None, "code": 400})
    assert failed_error(sdk).status == 400 and failed_error(sdk).message == "gone"
    raised = json.dumps({"error_type": "<class 'ValueError'>", "error_message": "boom"})
    assert failed_error(raised).status == 500 and "boom" in failed_error(raised).message
    assert failed_error("plain text").body()["error"]["type"] == "server_error"
    in_stream = EventReader().feed(sse({"error": {"message": "late", "code": 503}}))[0]
    assert in_stream.error is not None and in_stream.error.status == 503
