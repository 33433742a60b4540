"""An unmodified RunPod SDK worker that answers OpenAI jobs the way worker-vllm does, with a
deterministic fake model instead of vLLM: a generator handler with `return_aggregate_stream`
that yields one response object (models, requests without `stream`), or raw server-sent-event
strings ending with `data: [DONE]` (FAKE_FORM=raw, worker-vllm's default RAW_OPENAI_OUTPUT=1),
or lists of chunk dicts (FAKE_FORM=list, RAW_OPENAI_OUTPUT=0), and vLLM's flat error object.

The reply to a chat is `echo: <last user message>`, streamed word by word. A last message
starting with `slow` streams 50 words 0.2 s apart, `hang` sleeps 60 s before answering, and
`break` streams two words and then yields an error, which the SDK turns into a FAILED job.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import runpod

MODEL = "fake-model"
RAW = os.environ.get("FAKE_FORM", "raw") == "raw"


def error(message: str, code: int, param: str | None = None) -> dict[str, Any]:
    kind = "NotFoundError" if code == 404 else "BadRequestError"
    return {"object": "error", "message": message, "type": kind, "param": param, "code": code}


def sse(chunks: list[dict[str, Any]]) -> str:
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)


async def handler(job: dict[str, Any]) -> AsyncIterator[Any]:
    job_input = job["input"]
    route, body = job_input.get("openai_route"), job_input.get("openai_input") or {}
    if route == "/v1/models":
        yield {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                           "owned_by": "fake"}]}  # fmt: skip
        return
    if body.get("model") != MODEL:
        yield error(f"The model `{body.get('model')}` does not exist.", 404, "model")
        return
    chat = route == "/v1/chat/completions"
    prompt = body["messages"][-1]["content"] if chat else body["prompt"]
    if prompt.startswith("hang"):
        await asyncio.sleep(60)
    many = prompt.startswith(("slow", "break"))
    words = [f"w{i} " for i in range(50)] if many else ["echo: ", prompt]
    text = "".join(words)
    base = {"id": f"fake-{job['id']}", "created": int(time.time()), "model": MODEL}
    if not body.get("stream"):
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": len(words),
            "total_tokens": 1 + len(words),
        }
        kind = "chat.completion" if chat else "text_completion"
        yield {**base, "object": kind, "choices": [choice], "usage": usage}
        return

    def chunk(piece: str | None, reason: str | None = None, role: bool = False) -> dict[str, Any]:
        if chat:
            delta = {"role": "assistant", "content": ""} if role else {}
            if piece is not None:
                delta["content"] = piece
            body_ = {"index": 0, "delta": delta}
        else:
            body_ = {"index": 0, "text": piece or ""}
        kind = "chat.completion.chunk" if chat else "text_completion"
        return {**base, "object": kind, "choices": [{**body_, "finish_reason": reason}]}

    def out(chunks: list[dict[str, Any]], done: bool = False) -> Any:
        if RAW:
            return sse(chunks) + ("data: [DONE]\n\n" if done else "")
        return chunks

    if chat:
        yield out([chunk(None, role=True)])
    for i, word in enumerate(words):
        if prompt.startswith("break") and i == 2:
            yield {"error": "the fake model broke mid-stream"}
            return
        yield out([chunk(word)])
        if prompt.startswith("slow"):
            await asyncio.sleep(0.2)
    yield out([chunk(None, "stop")], done=True)


if __name__ == "__main__":
    runpod.serverless.start(
        {"handler": handler, "return_aggregate_stream": True, "concurrency_modifier": lambda n: 4}
    )
