"""The OpenAI requests a job can carry, checked: `{"openai_route": ..., "openai_input": body}`.

RunPod's OpenAI-compatible route (and ours, neuroq/api/openai_routes.py) turns each request to
`.../openai/v1/chat/completions`, `/completions` or `/models` into a job with that input. This
module turns it into one frozen request per route, or raises `OpenAIError` naming the parameter,
which the handler yields as the error object worker-vllm yields (the route answers it with the
error's HTTP status).

Parameters mean what they mean to OpenAI and vLLM, not what the `generate` action's defaults are:
`temperature` defaults to 1 and is held constant (no schedule), 0 is greedy; `top_p` defaults to
1; no repetition penalty unless vLLM's `repetition_penalty` extension asks for one; vLLM's `top_k`
extension is accepted too. A parameter we cannot honour is refused unless it has its neutral
value (`presence_penalty: 0`, `logprobs: false`, `tools: []`...), and an unknown one is refused
as OpenAI refuses it, so a client never silently gets something other than what it asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from neuroq.handler.validation import NAME_RE
from neuroq.model.sampling import MAX_LENGTH_CAP, REPETITION_PENALTY_CAP, TOP_K_CAP, SamplingParams

CHAT_ROUTE = "/v1/chat/completions"
COMPLETIONS_ROUTE = "/v1/completions"
MODELS_ROUTE = "/v1/models"
ROUTES = (CHAT_ROUTE, COMPLETIONS_ROUTE, MODELS_ROUTE)

#: choices per request (`n`) and prompts per completions request; one micro-batch holds 16 rows
MAX_CHOICES = 16
#: OpenAI's range for temperature
MAX_TEMPERATURE = 2.0
#: OpenAI's limit on stop sequences
MAX_STOPS = 4
MAX_MESSAGES = 256
#: all message contents (or one completions prompt) together; the model reads a few hundred
#: tokens at most, so more is a mistake, not a longer context
MAX_PROMPT_CHARS = 16_000
#: the `role`s a chat message may have; `developer` is OpenAI's newer name for `system`
ROLES = ("system", "developer", "user", "assistant")


class OpenAIError(Exception):
    """A request the handler answers with an OpenAI error instead of a completion."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.message, self.param, self.status, self.type = message, param, status, type

    def error_object(self) -> dict[str, Any]:
        """worker-vllm's error form: a flat object whose `code` is the HTTP status. It is an
        ordinary yielded value (no `error` key), so both runtimes keep it as the job's output."""
        return {
            "object": "error",
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "code": self.status,
        }


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def param_error(param: str, message: str) -> OpenAIError:
    return OpenAIError(f"{param}: {message}", param=param)


@dataclass(frozen=True)
class Message:
    role: str  #: "system", "user" or "assistant" (`developer` is read as "system")
    content: str


@dataclass(frozen=True)
class Options:
    """What the two completion routes share: the model, how to sample, and what to send."""

    model: str
    #: the sampling of choice 0; choice i draws with seed + i when a seed is given
    sampling: SamplingParams
    n: int = 1
    stop: tuple[str, ...] = ()
    stream: bool = False
    #: stream_options.include_usage: a last chunk with the usage and no choices
    include_usage: bool = False

    def sampling_for(self, choice: int) -> SamplingParams:
        seed = self.sampling.seed
        if seed is None or choice == 0:
            return self.sampling
        return SamplingParams(**{**self.sampling.to_dict(), "seed": seed + choice})


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    options: Options


@dataclass(frozen=True)
class CompletionRequest:
    prompts: tuple[str, ...]
    options: Options


@dataclass(frozen=True)
class ModelsRequest:
    """List the checkpoints this worker serves."""


OpenAIRequest = ChatRequest | CompletionRequest | ModelsRequest


def is_openai_input(raw: Any) -> bool:
    """Whether a job's input is an OpenAI request rather than a NeuroQ action."""
    return isinstance(raw, Mapping) and "openai_route" in raw


def parse_openai(raw: Mapping[str, Any]) -> OpenAIRequest:
    """The request a job's `openai_route`/`openai_input` make; OpenAIError naming the first bad
    parameter otherwise."""
    route = raw.get("openai_route")
    if route not in ROUTES:
        raise OpenAIError(
            f"openai_route: must be one of {', '.join(ROUTES)}; got {_show(route)}",
            param="openai_route",
            status=404,
        )
    if route == MODELS_ROUTE:
        return ModelsRequest()
    body = raw.get("openai_input")
    if not isinstance(body, Mapping):
        raise OpenAIError(f"the request body must be a JSON object, got {_show(body)}")
    chat = route == CHAT_ROUTE
    allowed = CHAT_PARAMS if chat else COMPLETION_PARAMS
    for key in body:
        if key not in allowed:
            raise OpenAIError(f"Unrecognized request argument supplied: {key}", param=key)
    given = {k: v for k, v in body.items() if v is not None}  # null means "the default"
    for key, neutral in (CHAT_NEUTRAL if chat else COMPLETION_NEUTRAL).items():
        if key in given and not neutral(given[key]):
            raise param_error(key, f"is not supported by this model; got {_show(given[key])}")
    options = _options(given, chat)
    if chat:
        return ChatRequest(_messages(given.get("messages")), options)
    return CompletionRequest(_prompts(given.get("prompt")), options)


def _options(given: dict[str, Any], chat: bool) -> Options:
    model = given.get("model")
    if not isinstance(model, str) or not model:
        raise param_error("model", "you must provide a model name (see /v1/models)")
    if "max_tokens" in given and "max_completion_tokens" in given:
        raise param_error("max_completion_tokens", "give max_tokens or max_completion_tokens")
    length_name = "max_completion_tokens" if "max_completion_tokens" in given else "max_tokens"
    max_length = _int(given, length_name, 1, MAX_LENGTH_CAP, SamplingParams.max_length)
    temperature = _number(given, "temperature", 0.0, MAX_TEMPERATURE, 1.0)
    top_p = _number(given, "top_p", 0.0, 1.0, 1.0)
    if top_p == 0.0:
        raise param_error("top_p", "must be greater than 0 (use temperature 0 for greedy)")
    top_k = _int(given, "top_k", -1, TOP_K_CAP, 0)
    penalty = _number(given, "repetition_penalty", 1.0, REPETITION_PENALTY_CAP, 1.0)
    seed = _int(given, "seed", 0, 2**63 - 1, None)
    n = _int(given, "n", 1, MAX_CHOICES, 1)
    if "best_of" in given and given["best_of"] != n:
        raise param_error("best_of", f"must equal n ({n}) or be left out")
    stream = _bool(given, "stream", False)
    include_usage = False
    options = given.get("stream_options")
    if options is not None:
        if not stream:
            raise param_error("stream_options", "is only allowed with stream: true")
        if not isinstance(options, Mapping) or set(options) - {"include_usage"}:
            raise param_error("stream_options", 'must be {"include_usage": true|false}')
        include_usage = _bool(options, "include_usage", False, "stream_options.include_usage")
    if temperature == 0.0:
        # Greedy: with one candidate left the draw is the most likely token (the sampler
        # divides by the temperature, so it never sees 0).
        temperature, top_k, top_p = 1.0, 1, 1.0
    sampling = SamplingParams(
        max_length=max_length,
        temperature=temperature,
        temp_min=temperature,  # constant: OpenAI's temperature has no schedule
        temp_max=temperature,
        top_k=max(top_k, 0),  # vLLM's -1 and our 0 both mean "no top-k"
        top_p=top_p,
        repetition_penalty=penalty,
        seed=seed,
    )
    return Options(model, sampling, n, _stops(given.get("stop")), stream, include_usage)


def _int(given: Mapping[str, Any], name: str, low: int, high: int, default: Any) -> Any:
    if name not in given:
        return default
    value = given[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise param_error(name, f"must be an integer in [{low}, {high}], got {_show(value)}")
    return value


def _number(given: Mapping[str, Any], name: str, low: float, high: float, default: float) -> float:
    if name not in given:
        return default
    value = given[name]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise param_error(name, f"must be a number in [{low:g}, {high:g}], got {_show(value)}")
    return float(value)


def _bool(given: Mapping[str, Any], name: str, default: bool, shown: str | None = None) -> bool:
    value = given.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise param_error(shown or name, f"must be true or false, got {_show(value)}")
    return value


def _stops(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    ok = isinstance(stops, list) and len(stops) <= MAX_STOPS
    if not ok or not all(isinstance(s, str) and s for s in stops):
        raise param_error("stop", f"must be a non-empty string or a list of up to {MAX_STOPS}")
    return tuple(stops)


def _messages(value: Any) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise param_error("messages", "must be a non-empty list of {role, content} objects")
    if len(value) > MAX_MESSAGES:
        raise param_error("messages", f"has {len(value)} entries; the limit is {MAX_MESSAGES}")
    messages: list[Message] = []
    for i, item in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(item, Mapping):
            raise param_error(where, "must be an object with role and content")
        role = item.get("role")
        if role not in ROLES:
            raise param_error(f"{where}.role", f"must be one of {', '.join(ROLES)}")
        content = _content(item.get("content"), f"{where}.content")
        messages.append(Message("system" if role == "developer" else role, content))
    if messages[-1].role != "user":
        raise param_error("messages", "the last message must have role 'user'")
    total = sum(len(m.content) for m in messages)
    if total > MAX_PROMPT_CHARS:
        raise param_error("messages", f"hold {total} characters; the limit is {MAX_PROMPT_CHARS}")
    return tuple(messages)


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or a list of text parts (joined); images and audio are
    refused, since the model reads text only."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        texts = []
        for part in value:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                raise param_error(where, "only text parts ({type: text, text}) are supported")
            text = part.get("text")
            if not isinstance(text, str):
                raise param_error(where, "a text part's text must be a string")
            texts.append(text)
        return "".join(texts)
    raise param_error(where, "must be a string or a list of text parts")


def _prompts(value: Any) -> tuple[str, ...]:
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise param_error("prompt", "must be a string or a non-empty list of strings")
    if len(prompts) > MAX_CHOICES:
        raise param_error("prompt", f"has {len(prompts)} prompts; the limit is {MAX_CHOICES}")
    for i, prompt in enumerate(prompts):
        if len(prompt) > MAX_PROMPT_CHARS:
            where = "prompt" if isinstance(value, str) else f"prompt[{i}]"
            raise param_error(
                where, f"is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}"
            )
    return tuple(prompts)


Neutral = Callable[[Any], bool]


def _is(*values: Any) -> Neutral:
    return lambda value: any(value == v and type(value) is type(v) for v in values)


def _empty(value: Any) -> bool:
    return value in ([], {})


#: parameters we cannot honour, accepted only with the value that asks for nothing
SHARED_NEUTRAL: dict[str, Neutral] = {
    "frequency_penalty": _is(0, 0.0),
    "presence_penalty": _is(0, 0.0),
    "logit_bias": _empty,
}
CHAT_NEUTRAL: dict[str, Neutral] = {
    **SHARED_NEUTRAL,
    "logprobs": _is(False),
    "top_logprobs": _is(0),
    "tools": _empty,
    "tool_choice": _is("none", "auto"),
    "response_format": lambda value: value == {"type": "text"},
}
COMPLETION_NEUTRAL: dict[str, Neutral] = {
    **SHARED_NEUTRAL,
    "logprobs": _is(0),
    "echo": _is(False),
    "suffix": _is(""),
}
#: what each route accepts; `user` is taken and ignored (it identifies end users to OpenAI)
SHARED_PARAMS = {
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "user",
    *SHARED_NEUTRAL,
}
CHAT_PARAMS = {*SHARED_PARAMS, "messages", "max_completion_tokens", "parallel_tool_calls"}
CHAT_PARAMS |= set(CHAT_NEUTRAL)
COMPLETION_PARAMS = {*SHARED_PARAMS, "prompt", "best_of", *COMPLETION_NEUTRAL}


def checked_model(name: str) -> str:
    """A model name that can name a checkpoint: one path segment (checked before any file is
    looked at); anything else cannot exist."""
    if not NAME_RE.fullmatch(name):
        raise OpenAIError(f"The model `{name}` does not exist.", param="model", status=404)
    return name
