"""Text in and out of an OpenAI request: prompts as the model's token ids, replies cut at stops.

Chat messages are laid out the way the model was trained and the way `generate` lays out a
session (docs/handler.md): each exchange `BOS <USER> u <ASSISTANT> a EOS`, the last user message
`BOS <USER> u <ASSISTANT>` for the model to continue. A system message has no marker of its own
in this model; it goes first as a plain-text record, `BOS text EOS`, the form plain training
texts take. A completions prompt is `BOS text`, continued as raw text with no turn markers.
"""

from __future__ import annotations

from collections.abc import Sequence

from neuroq.handler.openai_requests import Message
from neuroq.model.engine import Tokenizer
from neuroq.model.tokenizer import ASSISTANT_ID, BOS_ID, EOS_ID, USER_ID


def chat_prompt_ids(tokenizer: Tokenizer, messages: Sequence[Message]) -> list[int]:
    """The ids of a conversation whose last message is the user's (validation makes sure)."""
    merged: list[Message] = []
    for m in messages:  # consecutive messages of one role read as one turn
        if merged and merged[-1].role == m.role:
            merged[-1] = Message(m.role, merged[-1].content + "\n" + m.content)
        else:
            merged.append(m)
    ids: list[int] = []
    for i, m in enumerate(merged):
        text = tokenizer.encode(m.content)
        if m.role == "system":
            ids += [BOS_ID, *text, EOS_ID]
        elif m.role == "user":
            ids += [BOS_ID, USER_ID, *text, ASSISTANT_ID]
            reply = merged[i + 1] if i + 1 < len(merged) else None
            if reply is not None and reply.role != "assistant":
                ids.append(EOS_ID)  # a user turn nobody answered: an empty reply
        elif i > 0 and merged[i - 1].role == "user":  # the reply to the turn before
            ids += [*text, EOS_ID]
        else:  # an assistant message that answers nothing: a reply on its own
            ids += [BOS_ID, ASSISTANT_ID, *text, EOS_ID]
    return ids


def completion_prompt_ids(tokenizer: Tokenizer, prompt: str) -> list[int]:
    return [BOS_ID, *tokenizer.encode(prompt)]


class StopText:
    """Cuts one choice's reply at the first of its stop strings, as the pieces arrive.

    `push` returns the text that is safe to send now: a tail that could be the start of a stop
    string is held back until the next piece shows whether it is one. After a stop string is
    found, `stopped` is set and nothing more comes out; the stop string itself is never sent.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.text = ""
        self.sent = 0
        #: where the reply was cut: the stop string's start, and its end in the whole text
        self.cut: int | None = None
        self.cut_end: int | None = None

    @property
    def stopped(self) -> bool:
        return self.cut is not None

    def push(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.text += piece
        if not self.stops:
            return self._send(len(self.text))
        hits = [(i, i + len(s)) for s in self.stops if (i := self.text.find(s)) >= 0]
        if hits:
            self.cut, self.cut_end = min(hits)
            return self._send(self.cut)
        hold = max(_overlap(self.text, s) for s in self.stops)
        return self._send(len(self.text) - hold)

    def finish(self) -> str:
        """What was held back, once the reply has ended without completing a stop string."""
        return "" if self.stopped else self._send(len(self.text))

    def reply(self) -> str:
        return self.text[: self.cut] if self.cut is not None else self.text

    def _send(self, end: int) -> str:
        end = max(end, self.sent)
        out = self.text[self.sent : end]
        self.sent = end
        return out


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of `text` that begins `stop` (shorter than `stop`)."""
    for k in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:k]):
            return k
    return 0


def tokens_until(tokenizer: Tokenizer, ids: Sequence[int], chars: int) -> int:
    """How many of the generated `ids` it took to produce the first `chars` characters of the
    reply: the completion tokens of a reply cut at a stop string (the stop string included,
    as vLLM counts it). Decoding a prefix of ids gives a prefix of the text, so the count is
    the least k whose decoded text reaches `chars`."""
    low, high = 0, len(ids)
    while low < high:
        mid = (low + high) // 2
        if len(tokenizer.decode(list(ids[:mid]))) >= chars:
            high = mid
        else:
            low = mid + 1
    return low
