"""The handler's OpenAI path: jobs whose input is `{"openai_route", "openai_input"}`.

What such a job yields is what RunPod's worker-vllm yields, so the same job runs behind
RunPod's OpenAI-compatible route and ours (neuroq/api/openai_routes.py):

- `/v1/models` and a request without `stream`: one value, the OpenAI response object;
- `stream: true`: strings of raw server-sent events, each holding one or more
  `data: {chunk}\\n\\n` lines, the last ending with `data: [DONE]\\n\\n` (worker-vllm's default
  RAW_OPENAI_OUTPUT=1 form). A chat stream opens with a chunk carrying the role, then content
  deltas, then a chunk per choice with its `finish_reason`;
- a bad request: one error object (worker-vllm's flat form, `code` = the HTTP status).

Under the generator form of the handler these values are its yields (the final output is
their list: `return_aggregate_stream`). Under the coroutine form (`neuroq.handler:handler`)
`openai_output` posts each one to the job's stream and returns the list, so both look the same
to a reader of `/stream` and `/status`. Choices decode through the service's micro-batcher,
sharing forward passes with every other `generate` and chat request running at the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from neuroq.handler.models import ModelNotFound
from neuroq.handler.openai_requests import (
    ChatRequest,
    CompletionRequest,
    ModelsRequest,
    OpenAIError,
    checked_model,
    parse_openai,
)
from neuroq.handler.openai_text import (
    StopText,
    chat_prompt_ids,
    completion_prompt_ids,
    tokens_until,
)
from neuroq.handler.streaming import STREAM_INTERVAL_S
from neuroq.model.checkpoint import CheckpointError
from neuroq.model.engine import Engine, GenerationResult, StopReason
from neuroq.model.sampling import SamplingParams
from neuroq.model.tokenizer import TokenizerError

if TYPE_CHECKING:
    from neuroq.handler.actions import Service

log = logging.getLogger("neuroq.handler")

DONE = "data: [DONE]\n\n"


async def openai_output(service: Service, job: dict[str, Any], raw: Any) -> list[Any]:
    """The coroutine form: post each value to the job's stream as it is made, return them all.

    While one post is in flight the text made meanwhile gathers, and goes out as the next value,
    so a slow stream never holds the decoding back."""
    values: list[Any] = []
    async with service.runtime.stream(job) as post:
        async for value in openai_values(service, job, raw):
            values.append(value)
            try:
                await post(value)
            except Exception as exc:  # the output keeps every value: losing a chunk is not fatal
                log.warning("job %s: stream chunk lost: %s", job.get("id"), exc)
    return values


async def openai_values(service: Service, job: dict[str, Any], raw: Any) -> AsyncIterator[Any]:
    """What the job yields, in worker-vllm's form (module docstring)."""
    try:
        request = parse_openai(raw)
        if isinstance(request, ModelsRequest):
            yield models_list(service)
            return
        engine = await _engine(service, request.options.model)
    except OpenAIError as exc:
        yield exc.error_object()
        return
    reply = _Reply(engine, request, job)
    if request.options.stream:
        async for text in reply.stream(service):
            yield text
    else:
        yield await reply.whole(service)


def models_list(service: Service) -> dict[str, Any]:
    """/v1/models: every checkpoint the worker can serve, `default` first when present."""
    models = [service.models.describe(name) for name in service.models.names()]
    models.sort(key=lambda m: m["name"] != "default")
    data = [
        {
            "id": m["name"],
            "object": "model",
            "created": _epoch(m.get("created")),
            "owned_by": "neuroq",
            "root": m["name"],
            "parent": None,
        }
        for m in models
    ]
    return {"object": "list", "data": data}


async def _engine(service: Service, model: str) -> Engine:
    name = checked_model(model)
    not_found = OpenAIError(f"The model `{name}` does not exist.", param="model", status=404)
    if not service.models.exists(name):
        raise not_found
    try:
        engine: Engine = await asyncio.to_thread(service.models.engine, name)
    except ModelNotFound:
        raise not_found from None
    except (CheckpointError, TokenizerError) as exc:
        raise OpenAIError(f"model: {exc}", param="model", status=500, type="server_error") from exc
    return engine


class _Choice:
    """One choice: its prompt, sampling, stop scanner and, once decoded, its result."""

    def __init__(self, index: int, prompt: int, ids: list[int], params: SamplingParams) -> None:
        self.index, self.prompt, self.ids, self.params = index, prompt, ids, params
        self.stop: StopText
        self.result: GenerationResult | None = None

    def finish_reason(self) -> str:
        assert self.result is not None
        if self.stop.stopped or self.result.stop_reason != StopReason.LENGTH:
            return "stop"
        return "length"

    def completion_tokens(self, engine: Engine) -> int:
        """Tokens generated for this choice: up to the stop string when one cut the reply."""
        assert self.result is not None
        if self.stop.cut_end is None:
            return self.result.num_tokens
        return tokens_until(engine.tokenizer, self.result.token_ids, self.stop.cut_end)


class _Reply:
    """The response to one completion request: its choices and the objects sent for them."""

    def __init__(self, engine: Engine, request: ChatRequest | CompletionRequest, job: Any) -> None:
        self.engine = engine
        self.options = request.options
        self.chat = isinstance(request, ChatRequest)
        job_id = job.get("id") if isinstance(job, dict) else None
        suffix = job_id if isinstance(job_id, str) else uuid.uuid4().hex
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{suffix}"
        self.created = int(time.time())
        if isinstance(request, ChatRequest):
            prompts = [chat_prompt_ids(engine.tokenizer, request.messages)]
        else:
            prompts = [completion_prompt_ids(engine.tokenizer, p) for p in request.prompts]
        self.prompt_tokens = sum(len(ids) for ids in prompts)
        n = self.options.n
        self.choices = [
            _Choice(p * n + i, p, prompts[p], self.options.sampling_for(p * n + i))
            for p in range(len(prompts))
            for i in range(n)
        ]
        for choice in self.choices:
            choice.stop = StopText(self.options.stop)

    def usage(self) -> dict[str, int]:
        completion = sum(c.completion_tokens(self.engine) for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    async def whole(self, service: Service) -> dict[str, Any]:
        """The response object of a request without `stream`."""
        results = await asyncio.gather(
            *(service.batcher.generate(self.engine, c.ids, c.params) for c in self.choices)
        )
        for choice, result in zip(self.choices, results, strict=True):
            choice.result = result
            choice.stop.push(result.text)
        if self.chat:
            choices = [
                {
                    "index": c.index,
                    "message": {"role": "assistant", "content": c.stop.reply()},
                    "logprobs": None,
                    "finish_reason": c.finish_reason(),
                }
                for c in self.choices
            ]
        else:
            choices = [
                {
                    "index": c.index,
                    "text": c.stop.reply(),
                    "logprobs": None,
                    "finish_reason": c.finish_reason(),
                }
                for c in self.choices
            ]
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.options.model,
            "choices": choices,
            "usage": self.usage(),
        }

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.options.model,
            "choices": choices,
            **extra,
        }

    def _delta(self, choice: _Choice, text: str | None, reason: str | None = None) -> Any:
        if self.chat:
            delta = {} if text is None else {"content": text}
            body = {"index": choice.index, "delta": delta}
        else:
            body = {"index": choice.index, "text": text or ""}
        return self._chunk([{**body, "logprobs": None, "finish_reason": reason}])

    def _role(self, choice: _Choice) -> Any:
        """A chat stream's first chunk for a choice: who speaks, before any content."""
        delta = {"role": "assistant", "content": ""}
        return self._chunk(
            [{"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": None}]
        )

    async def stream(self, service: Service) -> AsyncIterator[str]:
        """Raw server-sent events: everything decoded since the previous value, each time;
        the first content at once, then at most one value per STREAM_INTERVAL_S until a
        choice ends."""
        # (choice index, a piece of text | the result | the exception that ended it)
        arrivals: asyncio.Queue[tuple[int, str | GenerationResult | BaseException]] = (
            asyncio.Queue()
        )
        ended = asyncio.Event()  # some choice has its result

        async def run(choice: _Choice) -> None:
            def on_piece(piece: str) -> None:
                arrivals.put_nowait((choice.index, piece))

            try:
                result = await service.batcher.generate(
                    self.engine, choice.ids, choice.params, on_piece
                )
            except Exception as exc:
                arrivals.put_nowait((choice.index, exc))
            else:
                arrivals.put_nowait((choice.index, result))
            ended.set()

        tasks = [asyncio.create_task(run(c)) for c in self.choices]
        try:
            if self.chat:
                yield _events(self._role(c) for c in self.choices)
            running = len(self.choices)
            loop = asyncio.get_running_loop()
            last_sent = 0.0  # when content last went out (0: not yet)
            while running:
                chunks = []
                batch = [await arrivals.get()]
                pause = STREAM_INTERVAL_S - (loop.time() - last_sent) if last_sent else 0.0
                if pause > 0 and not ended.is_set():
                    # At most one value per STREAM_INTERVAL_S once content flows, as `generate`
                    # streams: each value is an HTTP post, and a post per token cost decoding
                    # more than half its speed on two cores. The end of a choice goes at once.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ended.wait(), pause)
                while not arrivals.empty():
                    batch.append(arrivals.get_nowait())
                for index, arrival in batch:
                    choice = self.choices[index]
                    if isinstance(arrival, BaseException):
                        raise arrival
                    if isinstance(arrival, str):
                        text = choice.stop.push(arrival)
                    else:
                        choice.result = arrival
                        text = choice.stop.finish()
                    if text:
                        chunks.append(self._delta(choice, text))
                    if choice.result is not None:
                        running -= 1
                        chunks.append(self._delta(choice, None, choice.finish_reason()))
                if running == 0:
                    if self.options.include_usage:
                        chunks.append(self._chunk([], usage=self.usage()))
                    yield _events(chunks) + DONE
                elif chunks:
                    yield _events(chunks)
                    last_sent = loop.time()
        finally:
            for task in tasks:
                task.cancel()  # a cancelled job: each row finishes silently inside its batch


def _events(chunks: Any) -> str:
    return "".join(
        f"data: {json.dumps(c, ensure_ascii=False, separators=(',', ':'))}\n\n" for c in chunks
    )


def _epoch(created: Any) -> int:
    """A checkpoint's ISO creation time as Unix seconds (0 when unknown)."""
    if isinstance(created, str):
        try:
            return int(datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return 0
    return 0
