"""The handler's actions: health, status, init, train, generate, clear_session, reset_model.

`Service.handle(job)` validates the input into a request dataclass, runs one action and returns
the result object (docs/handler.md, Actions; the original's field names: `status`, `mode`,
`prompt`, `generated`, `vocab_size`, ...). Every expected failure comes back as
`{"error": "<param>: <what is wrong>"}`, which both our worker and the RunPod SDK turn into a
FAILED job with that error. Blocking work (loading,
training, decoding) runs in threads, so heartbeats, stop signals and other jobs keep going.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import torch

from neuroq.config import HandlerSettings, Settings
from neuroq.handler.batching import MicroBatcher
from neuroq.handler.models import ModelNotFound, ModelRegistry, dialogues_from
from neuroq.handler.openai import openai_output
from neuroq.handler.openai_requests import is_openai_input
from neuroq.handler.requests import (
    DEFAULT_NAMES,
    PROTECTED,
    ClearSessionRequest,
    GenerateRequest,
    HealthRequest,
    InitRequest,
    ResetModelRequest,
    StatusRequest,
    TrainRequest,
    model_name,
)
from neuroq.handler.runtime import Runtime, WorkerRuntime
from neuroq.handler.sessions import SessionStore
from neuroq.handler.streaming import piece_stream
from neuroq.handler.validation import InputError, validate
from neuroq.model.checkpoint import CheckpointError
from neuroq.model.engine import Engine
from neuroq.model.model import NeuroQConfig
from neuroq.model.tokenizer import MODEL_FILE, Tokenizer, TokenizerError
from neuroq.model.train import ProgressEvent

log = logging.getLogger("neuroq.handler")

#: seconds between training progress updates (each is an HTTP post)
PROGRESS_INTERVAL_S = 0.25


class Service:
    """Everything one worker process shares between jobs: models, sessions, the batcher, and
    the runtime its jobs report progress and stream chunks to (our worker unless told)."""

    def __init__(
        self,
        data_dir: Path,
        settings: HandlerSettings | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        settings = settings if settings is not None else HandlerSettings()
        self.data_dir = data_dir
        self.runtime: Runtime = runtime if runtime is not None else WorkerRuntime()
        self.models = ModelRegistry(
            data_dir, precision=settings.decode_precision, compile=settings.decode_compile
        )
        self.sessions = SessionStore(data_dir / "sessions.sqlite3", ttl_s=settings.session_ttl_s)
        self.batcher = MicroBatcher()

    @classmethod
    def from_env(
        cls, runtime: Runtime | None = None, settings: HandlerSettings | None = None
    ) -> Service:
        """The service of a worker process: NEUROQ_DATA_DIR and the handler settings (read from
        the environment unless given), with the process's torch threads set from them."""
        settings = settings if settings is not None else HandlerSettings.from_env()
        torch.set_num_threads(settings.torch_threads)
        return cls(Settings.from_env().data_dir, settings, runtime)

    async def handle(self, job: dict[str, Any]) -> dict[str, Any] | list[Any]:
        raw = job.get("input") if isinstance(job, dict) else None
        if is_openai_input(raw):
            # An OpenAI request (neuroq/handler/openai.py): the list of worker-vllm's values.
            return await openai_output(self, job, raw)
        action = "?"
        try:
            request = validate(raw if raw is not None else {})
            action = request.action
            match request:
                case HealthRequest():
                    return self.health()
                case StatusRequest():
                    return self.status()
                case ClearSessionRequest(session_id=session_id):
                    cleared = await asyncio.to_thread(self.sessions.clear, session_id)
                    return {"status": "success", "session_id": session_id, "cleared": cleared}
                case InitRequest():
                    return await self.init(request)
                case TrainRequest():
                    return await self.train(job, request)
                case ResetModelRequest():
                    return await self.reset_model(request)
                case GenerateRequest():
                    return await self.generate(job, request)
        except (InputError, ModelNotFound) as exc:
            return {"error": str(exc)}
        except (CheckpointError, TokenizerError) as exc:
            return {"error": f"model: {exc}"}
        except ValueError as exc:
            # Raised by the model library for combinations we do not pre-check (e.g. seq_length
            # above max_seq_len, or texts too short for one window); its text names the field.
            return {"error": f"{action}: {exc}"}

    def health(self) -> dict[str, Any]:
        """Answers without loading any weights."""

        def vocab(name: str) -> Any:
            return self.models.describe(name)["vocab_size"] if self.models.exists(name) else None

        return {
            "status": "healthy",
            # Whether a generate in that mode without `model` would find a checkpoint.
            "layered_available": self.models.exists(DEFAULT_NAMES["layered"]),
            "brain_available": self.models.exists(DEFAULT_NAMES["brain"]),
            "device": _device(),
            "model_initialized": bool(self.models.loaded()),
            "layered_vocab_size": vocab(DEFAULT_NAMES["layered"]),
            "brain_vocab_size": vocab(DEFAULT_NAMES["brain"]),
        }

    def status(self) -> dict[str, Any]:
        models = [self.models.describe(name) for name in self.models.names()]
        default = next((m for m in models if m["name"] == DEFAULT_NAMES["layered"]), None)
        return {
            "status": "ok",
            "initialized": bool(self.models.loaded()),
            "device": _device(),
            "vocab_size": default["vocab_size"] if default else None,
            "models": models,
            "sessions": self.sessions.count(),
            "batches": len(self.batcher.batch_sizes),
        }

    async def init(self, request: InitRequest) -> dict[str, Any]:
        name = model_name(request.model, request.mode)
        _check_overwrite(name, request.overwrite, "init")
        model = await asyncio.to_thread(self.models.init, name, request.mode, request.architecture)
        return {
            "status": "success",
            "mode": request.mode,
            "model": name,
            "message": f"model {name!r} initialised ({model.num_params():,} parameters, untrained)",
            "vocab_size": model.config.vocab_size,
            "num_params": model.num_params(),
        }

    async def train(self, job: dict[str, Any], request: TrainRequest) -> dict[str, Any]:
        name = model_name(request.model, request.mode)
        _check_overwrite(name, request.overwrite, "train")
        if request.from_model is None:
            config, tokenizer = self.models.train_config(name, request.mode, request.architecture)
        else:
            config, tokenizer = self._fine_tune_base(request.from_model, request)
        dialogues = dialogues_from(request.training.texts)
        stop = threading.Event()
        last = [0.0]

        def progress(ev: ProgressEvent) -> None:
            now = time.monotonic()
            if now - last[0] < PROGRESS_INTERVAL_S and ev.step != ev.total_steps:
                return
            last[0] = now
            data = {
                "status": "training",
                "model": name,
                "epoch": ev.epoch,
                "epochs": ev.epochs,
                "step": ev.step,
                "total_steps": ev.total_steps,
                "loss": round(ev.loss, 4),
                "tokens_per_s": round(ev.tokens_per_s, 1),
            }
            try:
                self.runtime.report_progress(job, data)
            except Exception as exc:  # progress is a courtesy: losing it must not stop training
                log.warning("job %s: progress update lost: %s", job.get("id"), exc)

        run = asyncio.ensure_future(
            asyncio.to_thread(
                self.models.train,
                name,
                config,
                tokenizer,
                dialogues,
                request.training,
                progress=progress,
                should_stop=stop.is_set,
                from_model=request.from_model,
            )
        )
        try:
            result = await asyncio.shield(run)
        except asyncio.CancelledError:
            # Stopped by the server (cancel or timeout): end the loop at its next step and let
            # it delete its staging directory before the slot is given back.
            stop.set()
            await asyncio.gather(run, return_exceptions=True)
            raise
        return {
            "status": "success",
            "mode": config.mode,
            "model": name,
            "message": f"trained {result.epochs} epochs on {len(dialogues)} texts",
            "checkpoint": name,
            "num_samples": len(dialogues),
            "epochs": result.epochs,
            "steps": result.steps,
            "train_loss": result.train_loss,
            "eval_loss": result.eval_loss,
            "tokens_per_s": round(result.tokens_per_s, 1),
            "vocab_size": config.vocab_size,
            **({"from_model": request.from_model} if request.from_model is not None else {}),
        }

    def _fine_tune_base(self, source: str, request: TrainRequest) -> tuple[NeuroQConfig, Any]:
        """The architecture and tokenizer of the checkpoint to fine-tune, which the request
        must not contradict: its weights only fit that architecture."""
        if not self.models.exists(source):
            raise ModelNotFound(f"from_model: no checkpoint named {source!r}")
        given = request.architecture.overrides()
        if given:
            raise InputError(
                next(iter(given)),
                f"fine-tuning keeps the architecture of {source!r}; leave out the model "
                f"parameters ({', '.join(given)})",
            )
        config = self.models.config(source)
        if request.mode is not None and config.mode != request.mode:
            raise InputError(
                "mode", f"model {source!r} is a {config.mode} model, not {request.mode}"
            )
        return config, Tokenizer.load(self.models.path(source) / MODEL_FILE)

    async def reset_model(self, request: ResetModelRequest) -> dict[str, Any]:
        name = request.model
        if name not in PROTECTED:
            shipped = ", ".join(repr(n) for n in PROTECTED)
            raise InputError(
                "model", f"only {shipped} has a shipped version to go back to, not {name!r}"
            )
        reset = await asyncio.to_thread(self.models.reset, name)
        message = (
            f"model {name!r} is the shipped one again; the trained copy was deleted"
            if reset
            else f"model {name!r} is already the shipped one"
        )
        return {"status": "success", "model": name, "reset": reset, "message": message}

    async def generate(self, job: dict[str, Any], request: GenerateRequest) -> dict[str, Any]:
        mode = request.mode
        name = model_name(request.model, mode)
        trained: dict[str, Any] | None = None
        if request.train_before_generate:
            before = TrainRequest(
                name,
                mode,
                request.architecture,
                request.training,
                overwrite=request.overwrite,
                from_model=request.from_model,
            )
            trained = await self.train(job, before)
        if not self.models.exists(name):
            train = json.dumps({"action": "train", "model": name, "mode": mode})
            hint = f"; send {train} first" if mode else ""
            raise ModelNotFound(f"model: no checkpoint named {name!r}{hint}")
        info = self.models.describe(name)
        if mode is not None and info["mode"] != mode:
            raise InputError("mode", f"model {name!r} is a {info['mode']} model, not {mode}")
        engine: Engine = await asyncio.to_thread(self.models.engine, name)

        ids: list[int] = []
        if request.session_id is not None:
            history = await asyncio.to_thread(self.sessions.history, request.session_id)
            # Earlier turns as the training records look (BOS <USER> u <ASSISTANT> a EOS).
            pairs = zip(history[::2], history[1::2], strict=False)
            for user, assistant in pairs:
                ids += engine.tokenizer.encode_dialogue(user.content, assistant.content)  # type: ignore[attr-defined]
        ids += engine.prompt_ids(request.prompt)

        if request.stream:
            async with piece_stream(self.runtime, job) as on_piece:
                result = await self.batcher.generate(engine, ids, request.sampling, on_piece)
        else:
            result = await self.batcher.generate(engine, ids, request.sampling)

        output: dict[str, Any] = {
            "status": "success",
            "mode": engine.model.config.mode,
            "prompt": request.prompt,
            "generated": result.text,
            "vocab_size": engine.model.config.vocab_size,
            "model": name,
            "stop_reason": result.stop_reason.value,
            "num_tokens": len(result.token_ids),
        }
        if request.session_id is not None:
            await asyncio.to_thread(
                self.sessions.append, request.session_id, request.prompt, result.text
            )
            output["session_id"] = request.session_id
        if trained is not None:
            output["training"] = {k: trained[k] for k in ("epochs", "steps", "eval_loss")}
        return output


def _check_overwrite(name: str, overwrite: bool, action: str) -> None:
    """A shipped model is replaced only on request: every generate without `model` answers
    from it, so a train or init job that merely left out `model` must not change them all."""
    if name in PROTECTED and not overwrite:
        raise InputError(
            "model",
            f'{name!r} is the model every request without "model" uses, and {action} would '
            f'replace it; name a new model ("model": "my-model") or send "overwrite": true '
            f'({{"action": "reset_model"}} brings the shipped one back)',
        )


def _device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"
