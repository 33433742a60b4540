"""The NeuroQ handler behind the OpenAI routes, through the official `openai` package, sync and
async: models.list, `model` choosing a checkpoint a job wrote, chat completions with and without
streaming, completions, `n` choices (reproducible with a seed, decoded in one batch), `user`
accepted and ignored, system messages and history, stop strings, greedy answers equal to the
engine's own greedy decoding with exact token usage, concurrent requests sharing batches, and the
SDK's typed exceptions for bad parameters, an unknown model and a bad key."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from harness import ServerProcess
from openai.types.chat import ChatCompletion
from openai_harness import Workers, async_client, client

from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from neuroq.model.engine import Engine, GenerationResult, StopReason
from neuroq.model.sampling import SamplingParams
from neuroq.model.tokenizer import ASSISTANT_ID, BOS_ID, EOS_ID, USER_ID, Tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PROMPT = "Pythonについて教えて"
#: a model the init action writes in a moment (handler tests use the same)
TINY = {"embed_dim": 16, "hidden_dim": 32, "num_heads": 2, "num_layers": 1, "max_seq_len": 32}


@pytest.fixture(scope="module")
def engine() -> Engine:
    """The shipped model, run here directly: the reference for greedy answers."""
    model, tokenizer, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    return Engine(model, tokenizer, device="cpu")


@pytest.fixture(scope="module")
def tokenizer(engine: Engine) -> Tokenizer:
    assert isinstance(engine.tokenizer, Tokenizer)
    return engine.tokenizer


@pytest.fixture(scope="module")
def api(openai_server: ServerProcess, neuroq_ep: str) -> Iterator[openai.OpenAI]:
    with client(openai_server, neuroq_ep) as c:
        yield c


def greedy(engine: Engine, prompt: str, max_tokens: int) -> GenerationResult:
    params = SamplingParams(max_length=max_tokens, temperature=1.0, top_k=1, repetition_penalty=1.0)
    return engine.generate([prompt], params)[0]


def batches(server: ServerProcess, endpoint: str) -> int:
    """How many batches the endpoint's worker has run (its `status` action)."""
    with server.client() as http:
        reply = http.post(f"/{endpoint}/runsync", json={"input": {"action": "status"}})
    return int(reply.json()["output"]["batches"])


def test_models_lists_the_shipped_checkpoint(api: openai.OpenAI) -> None:
    ids = [m.id for m in api.models.list()]
    assert ids[0] == "default"


def test_model_selects_a_checkpoint_an_init_job_wrote(
    api: openai.OpenAI,
    openai_server: ServerProcess,
    neuroq_ep: str,
    workers: Workers,
    engine: Engine,
) -> None:
    """An untrained model (seeded, so its greedy reply is fixed) answers unlike `default`."""
    name = "openai-tiny"
    with openai_server.client() as http:
        init = http.post(
            f"/{neuroq_ep}/runsync", json={"input": {"action": "init", "model": name, **TINY}}
        )
    assert init.json()["output"]["status"] == "success", init.text
    ids = [m.id for m in api.models.list()]
    assert ids[0] == "default" and name in ids

    model, tokenizer, _ = load_checkpoint(workers.root / "data" / "checkpoints" / name)
    expected = greedy(Engine(model, tokenizer, device="cpu"), PROMPT, 8)
    assert expected.text != greedy(engine, PROMPT, 8).text
    reply = api.chat.completions.create(
        model=name,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=8,
        temperature=0,
    )
    assert reply.model == name
    assert reply.choices[0].message.content == expected.text
    assert reply.usage is not None and reply.usage.completion_tokens == expected.num_tokens


def test_greedy_chat_equals_the_engine_and_counts_tokens_exactly(
    api: openai.OpenAI, engine: Engine, tokenizer: Tokenizer
) -> None:
    reply = api.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
        temperature=0,
    )
    expected = greedy(engine, PROMPT, 24)
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == expected.text
    length = expected.stop_reason == StopReason.LENGTH
    assert choice.finish_reason == ("length" if length else "stop")
    assert reply.object == "chat.completion" and reply.model == "default"
    assert reply.usage is not None
    # BOS <USER> prompt <ASSISTANT>, and the reply's generated ids (without the stop token)
    assert reply.usage.prompt_tokens == len(tokenizer.encode(PROMPT)) + 3
    assert reply.usage.completion_tokens == expected.num_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + expected.num_tokens


def test_greedy_chat_equals_neuroq_generate(api: openai.OpenAI) -> None:
    """`neuroq generate --temperature 0` with OpenAI's defaults (no penalty, top_p 1)."""
    cmd = [sys.executable, "-m", "neuroq", "generate", PROMPT, "--temperature", "0"]
    cmd += ["--top-p", "1", "--repetition-penalty", "1", "--max-length", "24"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True)
    reply = api.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.choices[0].message.content == done.stdout.rstrip("\n")


def test_streamed_chat_sends_the_role_then_the_same_text(
    api: openai.OpenAI, engine: Engine
) -> None:
    stream = api.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    expected = greedy(engine, PROMPT, 24)
    assert text == expected.text
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] in ("stop", "length") and not any(finals[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == expected.num_tokens


def test_system_message_and_history_are_laid_out_as_training_records(
    api: openai.OpenAI, tokenizer: Tokenizer
) -> None:
    messages = [
        {"role": "system", "content": "あなたは親切です"},
        {"role": "user", "content": "こんにちは"},
        {"role": "assistant", "content": "こんにちは!"},
        {"role": "user", "content": PROMPT},
    ]
    reply = api.chat.completions.create(
        model="default",
        messages=messages,
        max_tokens=5,
        temperature=0,  # type: ignore[arg-type]
    )
    ids = [BOS_ID, *tokenizer.encode("あなたは親切です"), EOS_ID]
    ids += [BOS_ID, USER_ID, *tokenizer.encode("こんにちは"), ASSISTANT_ID]
    ids += [*tokenizer.encode("こんにちは!"), EOS_ID]
    ids += [BOS_ID, USER_ID, *tokenizer.encode(PROMPT), ASSISTANT_ID]
    assert reply.usage is not None and reply.usage.prompt_tokens == len(ids)


def sampled(api: openai.OpenAI, seed: int, **extra: Any) -> ChatCompletion:
    """A seeded, sampled (temperature 0.9) reply to PROMPT."""
    return api.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=12,
        temperature=0.9,
        seed=seed,
        **extra,
    )


def test_n_choices_with_a_seed_are_reproducible(api: openai.OpenAI) -> None:
    def ask() -> list[str]:
        reply = sampled(api, 7, n=3)
        assert [c.index for c in reply.choices] == [0, 1, 2]
        return [c.message.content or "" for c in reply.choices]

    first = ask()
    assert ask() == first
    assert len(set(first)) > 1  # each choice draws with its own seed


def test_n_choices_decode_in_one_batch(
    api: openai.OpenAI, openai_server: ServerProcess, neuroq_ep: str
) -> None:
    messages: Any = [{"role": "user", "content": PROMPT}]
    before = batches(openai_server, neuroq_ep)
    reply = api.chat.completions.create(
        model="default", messages=messages, max_tokens=8, temperature=0.9, seed=1, n=4
    )
    assert len(reply.choices) == 4
    assert batches(openai_server, neuroq_ep) - before == 1
    stream = api.chat.completions.create(
        model="default", messages=messages, max_tokens=8, temperature=0.9, n=3, stream=True
    )
    ended = {choice.index for chunk in stream for choice in chunk.choices if choice.finish_reason}
    assert ended == {0, 1, 2}
    assert batches(openai_server, neuroq_ep) - before == 2


def test_user_is_accepted_and_changes_nothing(api: openai.OpenAI) -> None:
    """docs/openai.md: `user` is accepted and ignored, so a seeded reply is the same with it."""
    with_user = sampled(api, 11, user="user-1234").choices[0].message.content
    assert with_user and with_user == sampled(api, 11).choices[0].message.content


def test_stop_string_cuts_the_reply(api: openai.OpenAI, engine: Engine) -> None:
    expected = greedy(engine, PROMPT, 40).text
    assert "。" in expected, expected  # the greedy reply has a sentence end to stop at
    reply = api.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=40,
        temperature=0,
        stop=["。"],
    )
    assert reply.choices[0].message.content == expected[: expected.index("。")]
    assert reply.choices[0].finish_reason == "stop"


def test_bad_parameters_raise_the_sdks_typed_errors(
    api: openai.OpenAI, openai_server: ServerProcess, neuroq_ep: str
) -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 1000}, "max_tokens"),
        ({"extra_body": {"mirostat": 1}}, "mirostat"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            api.chat.completions.create(model="default", messages=messages, **extra)
        assert caught.value.status_code == 400
        assert caught.value.param == param, caught.value.body
        assert param in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        api.chat.completions.create(model="default", messages=[])
    assert caught.value.param == "messages"
    with pytest.raises(openai.NotFoundError) as not_found:
        api.chat.completions.create(model="no-such-model", messages=messages)
    assert not_found.value.param == "model"
    assert "no-such-model" in not_found.value.message
    with (
        client(openai_server, neuroq_ep, api_key="wrong") as stranger,
        pytest.raises(openai.AuthenticationError),
    ):
        stranger.models.list()


async def test_async_client_completions_and_streams(
    openai_server: ServerProcess, neuroq_ep: str, engine: Engine, tokenizer: Tokenizer
) -> None:
    async with async_client(openai_server, neuroq_ep) as api:
        reply = await api.completions.create(
            model="default", prompt="Python", max_tokens=10, temperature=0
        )
        params = SamplingParams(max_length=10, temperature=1.0, top_k=1, repetition_penalty=1.0)
        ids = [BOS_ID, *tokenizer.encode("Python")]
        tokens = [e.token for events in engine.steps([ids], [params]) for e in events]
        expected = tokenizer.decode([t for t in tokens if t is not None])
        assert reply.object == "text_completion"
        assert reply.choices[0].text == expected
        assert reply.usage is not None and reply.usage.prompt_tokens == len(ids)

        stream = await api.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == greedy(engine, PROMPT, 24).text


async def test_concurrent_chats_share_batches(
    openai_server: ServerProcess, neuroq_ep: str, api: openai.OpenAI
) -> None:
    before = batches(openai_server, neuroq_ep)
    async with async_client(openai_server, neuroq_ep) as aapi:
        replies = await asyncio.gather(
            *(
                aapi.chat.completions.create(
                    model="default",
                    messages=[{"role": "user", "content": f"質問{i}"}],
                    max_tokens=16,
                    temperature=0.7,
                    seed=i,
                )
                for i in range(8)
            )
        )
    assert all(r.choices[0].finish_reason in ("stop", "length") for r in replies)
    ran = batches(openai_server, neuroq_ep) - before
    assert ran < 8, "eight concurrent chats ran as eight separate batches"
    # and each one is the same as when it runs alone
    solo = api.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "質問3"}],
        max_tokens=16,
        temperature=0.7,
        seed=3,
    )
    assert solo.choices[0].message.content == replies[3].choices[0].message.content
    assert (
        json.loads(solo.model_dump_json())["usage"]
        == json.loads(replies[3].model_dump_json())["usage"]
    )
