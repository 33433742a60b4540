"""A micro-batcher: concurrent generate jobs share one batched forward pass per step.

With `--concurrency N` the worker runs up to N handler tasks at once. Each submits its request
here; the collector waits `window_s` after the first arrival (or until `max_batch` are queued),
groups the requests by engine, and runs each group through the engine's batched decode loop in a
thread. Requests that arrive while a batch runs form the next batch. Every row samples from its
own generator, so a request returns the same tokens alone or in a batch.

Pieces of text are handed back to the event loop as they are produced, so each request can
stream its reply while the batch is still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from neuroq.model.engine import Engine, GenerationResult, IncrementalDecoder, StopReason
from neuroq.model.sampling import SamplingParams

#: how long the first request of a batch waits for company
DEFAULT_WINDOW_S = 0.005
DEFAULT_MAX_BATCH = 16


@dataclass(eq=False)
class _Request:
    engine: Engine
    ids: list[int]
    params: SamplingParams
    #: called on the event loop with each new piece of text
    on_piece: Callable[[str], None] | None
    future: asyncio.Future[GenerationResult]
    cancelled: threading.Event = field(default_factory=threading.Event)


def run_rows(
    engine: Engine,
    prompts: list[list[int]],
    params: list[SamplingParams],
    on_piece: Callable[[int, str], None],
    skip: Callable[[int], bool] = lambda row: False,
) -> list[GenerationResult]:
    """Decode a batch of prompt id lists; `on_piece(row, text)` gets each new piece of a row.

    Uses the engine's step loop (one event per running row per step). A row for which `skip(row)`
    turns true (its job was cancelled) still runs to its end inside the batch, but emits nothing.
    """
    decoders = [IncrementalDecoder(engine.tokenizer) for _ in prompts]
    reasons = [StopReason.LENGTH] * len(prompts)
    # Engine.steps is the batched loop under Engine.generate; it takes id lists, which sessions
    # need (a history of several turns is not one wrapped prompt).
    for events in engine.steps(prompts, params):
        for event in events:
            if event.token is not None:
                piece = decoders[event.row].push(event.token)
                if piece and not skip(event.row):
                    on_piece(event.row, piece)
            if event.stop is not None:
                reasons[event.row] = event.stop
    results = []
    for row, decoder in enumerate(decoders):
        rest = decoder.finish()
        if rest and not skip(row):
            on_piece(row, rest)
        results.append(GenerationResult("".join(decoder.emitted), decoder.ids, reasons[row]))
    return results


class MicroBatcher:
    """Collects generate requests on one event loop and runs them in batches in a thread."""

    def __init__(
        self, window_s: float = DEFAULT_WINDOW_S, max_batch: int = DEFAULT_MAX_BATCH
    ) -> None:
        self.window_s = window_s
        self.max_batch = max_batch
        self._queue: asyncio.Queue[_Request] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._collector: asyncio.Task[None] | None = None
        #: sizes of the batches run so far (tests and the bench read it)
        self.batch_sizes: list[int] = []

    async def generate(
        self,
        engine: Engine,
        ids: list[int],
        params: SamplingParams,
        on_piece: Callable[[str], None] | None = None,
    ) -> GenerationResult:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new loop (e.g. the RunPod SDK restarted its own): start over on it.
            self._loop = loop
            self._queue = asyncio.Queue()
            self._collector = loop.create_task(self._collect(), name="neuroq-batcher")
        assert self._queue is not None
        request = _Request(engine, ids, params, on_piece, loop.create_future())
        self._queue.put_nowait(request)
        try:
            return await asyncio.shield(request.future)
        except asyncio.CancelledError:
            request.cancelled.set()  # the row finishes inside its batch, silently
            raise

    async def _collect(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            deadline = asyncio.get_running_loop().time() + self.window_s
            while len(batch) < self.max_batch:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), timeout))
                except TimeoutError:
                    break
            live = [r for r in batch if not r.cancelled.is_set()]
            groups: dict[int, list[_Request]] = {}
            for r in live:
                groups.setdefault(id(r.engine), []).append(r)
            for group in groups.values():
                self.batch_sizes.append(len(group))
                await self._run_group(group)

    async def _run_group(self, group: list[_Request]) -> None:
        loop = asyncio.get_running_loop()

        def emit(row: int, piece: str) -> None:
            callback = group[row].on_piece
            if callback is not None:
                with contextlib.suppress(RuntimeError):  # loop closed at exit
                    loop.call_soon_threadsafe(callback, piece)

        def work() -> list[GenerationResult]:
            return run_rows(
                group[0].engine,
                [r.ids for r in group],
                [r.params for r in group],
                emit,
                skip=lambda row: group[row].cancelled.is_set(),
            )

        try:
            results = await asyncio.to_thread(work)
        except Exception as exc:
            for r in group:
                if not r.future.done():
                    r.future.set_exception(exc)
            return
        for r, result in zip(group, results, strict=True):
            if not r.future.done():
                r.future.set_result(result)
