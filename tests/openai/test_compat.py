"""Compatibility both ways, through the official `openai` client:

- an unmodified RunPod SDK worker answering the way worker-vllm does (fake_vllm_worker.py:
  raw SSE strings with `[DONE]`, or lists of chunk dicts without it; vLLM's error object; an
  error yielded mid-stream, which the SDK turns into a FAILED job) works behind our routes;
- the NeuroQ handler runs unchanged under RunPod's SDK, in the generator form hosted RunPod's
  OpenAI route expects (NEUROQ_GENERATOR=1) and in its default coroutine form, and answers as
  it does under our worker."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from harness import ServerProcess
from openai_harness import async_client, client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

HELLO: Any = [{"role": "user", "content": "hello"}]
GREEDY: Any = {"max_tokens": 16, "temperature": 0}
PROMPT: Any = [{"role": "user", "content": "Pythonについて教えて"}]


def test_vllm_style_worker_raw_sse(openai_server: ServerProcess, fake_ep: str) -> None:
    with client(openai_server, fake_ep) as api:
        assert [m.id for m in api.models.list()] == ["fake-model"]
        reply = api.chat.completions.create(model="fake-model", messages=HELLO)
        assert reply.choices[0].message.content == "echo: hello"
        stream = api.chat.completions.create(model="fake-model", messages=HELLO, stream=True)
        chunks = list(stream)
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: hello"
        assert chunks[-1].choices[0].finish_reason == "stop"
        text = api.completions.create(model="fake-model", prompt="abc", stream=True)
        assert "".join(c.choices[0].text for c in text) == "echo: abc"
        with pytest.raises(openai.NotFoundError) as caught:
            api.chat.completions.create(model="other", messages=HELLO)
        assert caught.value.param == "model"


async def test_vllm_style_worker_lists_of_chunks(
    openai_server: ServerProcess, fake_list_ep: str
) -> None:
    async with async_client(openai_server, fake_list_ep) as api:
        stream = await api.chat.completions.create(model="fake-model", messages=HELLO, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream]
        assert "".join(pieces) == "echo: hello"
        reply = await api.completions.create(model="fake-model", prompt="xyz")
        assert reply.choices[0].text == "echo: xyz"


def test_an_error_mid_stream_reaches_the_client(openai_server: ServerProcess, fake_ep: str) -> None:
    breaking: Any = [{"role": "user", "content": "break"}]
    with client(openai_server, fake_ep) as api:
        stream = api.chat.completions.create(
            model="fake-model",
            messages=breaking,
            stream=True,
        )
        seen: list[str] = []
        with pytest.raises(openai.APIError) as caught:
            for chunk in stream:
                seen.append(chunk.choices[0].delta.content or "")
    assert "".join(seen) == "w0 w1 "  # what came before the error was delivered
    assert "broke mid-stream" in caught.value.message


@pytest.mark.parametrize("endpoint", ["sdk_neuroq_ep", "sdk_coroutine_ep"])
def test_neuroq_handler_under_the_runpod_sdk(
    openai_server: ServerProcess, neuroq_ep: str, endpoint: str, request: pytest.FixtureRequest
) -> None:
    """The same greedy answers, stream and errors as under our worker (`neuroq_ep`)."""
    ep = request.getfixturevalue(endpoint)
    with client(openai_server, neuroq_ep) as ours, client(openai_server, ep) as sdk:
        expected = ours.chat.completions.create(model="default", messages=PROMPT, **GREEDY)
        reply = sdk.chat.completions.create(model="default", messages=PROMPT, **GREEDY)
        assert reply.choices[0].message.content == expected.choices[0].message.content
        assert reply.usage == expected.usage
        stream = sdk.chat.completions.create(
            model="default", messages=PROMPT, stream=True, **GREEDY
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream)
        assert text == expected.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="default", messages=PROMPT, extra_body={"top_k": 99})
        assert caught.value.param == "top_k"
        with pytest.raises(openai.NotFoundError):
            sdk.chat.completions.create(model="nope", messages=PROMPT)
