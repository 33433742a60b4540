"""`Service.handle` in-process: validation errors, streaming, batching, sessions and training,
with a recording runtime in place of a worker (test_handler_e2e.py runs the same handler through
real server and worker processes). Generation uses the shipped model on the CPU."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from neuroq.handler.actions import Service
from neuroq.handler.batching import MicroBatcher
from neuroq.handler.runtime import ChunkPoster

#: the request users send (docs/handler.md): it must keep working unchanged
SEED_REQUEST = {
    "action": "generate",
    "mode": "layered",
    "prompt": "ChatGPTについて教えて",
    "max_length": 80,
    "temperature": 0.7,
    "repetition_penalty": 2.5,
}
TINY = {"embed_dim": 16, "hidden_dim": 32, "num_heads": 2, "num_layers": 1, "max_seq_len": 32}
TEXTS = [{"user": f"question {i}", "assistant": f"answer number {i} is plain"} for i in range(40)]


@dataclass
class RecordingRuntime:
    """Keeps what jobs report instead of posting it; `fail_posts` makes every chunk post raise."""

    progress: list[dict[str, Any]] = field(default_factory=list)
    chunks: dict[str, list[Any]] = field(default_factory=dict)
    fail_posts: bool = False

    def report_progress(self, job: dict[str, Any], data: dict[str, Any]) -> None:
        self.progress.append(data)

    @asynccontextmanager
    async def stream(self, job: dict[str, Any]) -> AsyncIterator[ChunkPoster]:
        async def post(chunk: Any) -> None:
            if self.fail_posts:
                raise ConnectionError("server gone")
            self.chunks.setdefault(job["id"], []).append(chunk)

        yield post


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("handler-data")


@pytest.fixture
def runtime() -> RecordingRuntime:
    return RecordingRuntime()


@pytest.fixture
def service(data_dir: Path, runtime: RecordingRuntime) -> Iterator[Service]:
    svc = Service(data_dir, runtime=runtime)
    yield svc
    svc.sessions.close()


_job_ids = iter(range(1_000_000))


async def call(service: Service, input_: dict[str, Any]) -> dict[str, Any]:
    return await service.handle({"id": f"job-{next(_job_ids)}", "input": input_})


async def generated(service: Service, input_: dict[str, Any]) -> str:
    out = await call(service, input_)
    assert out["status"] == "success", out
    return str(out["generated"])


# Validation: what a user reads on a bad request.

EXACT_ERRORS = [
    ({"prompt": "hi", "max_length": 500}, "max_length: must be an integer in [1, 150], got 500"),
    (
        {"action": "dance"},
        "action: must be one of health, status, init, train, generate, clear_session, reset_model; "
        "got 'dance'",
    ),
    ({"prompt": "x" * 5000}, "prompt: is 5000 characters long; the limit is 4000"),
    ({"prompt": "hi", "model": "x"}, "model: no checkpoint named 'x'"),
    ({"max_length": 10}, "prompt: is required for action 'generate'"),
    (
        {"prompt": "hi", "max_length": 5, "max_tokens": 5},
        "max_tokens: given twice (as 'max_tokens'",
    ),
    ({"prompt": "hi", "temp_max": 1.0}, "temp_min: temp_min and temp_max must be given together"),
    ({"prompt": "hi", "temp_min": 2.0, "temp_max": 1.0}, "temp_min: must be <= temp_max (1.0)"),
    (
        {"prompt": "hi", "mode": "brain"},
        "model: no checkpoint named 'brain'; send "
        '{"action": "train", "model": "brain", "mode": "brain"} first',
    ),
    ({"action": "clear_session", "session_id": "a b"}, "session_id: must be 1-128 characters"),
    ({"action": "init", "checkpoint": "../x"}, "checkpoint: must be a checkpoint name"),
    ({"action": "train", "lr": 0}, "lr: must be a number in (0.0, 1.0], got 0"),
    (
        {"action": "pretrain"},
        "action: 'pretrain' is not available: it fetched training data from the internet or "
        'started an OpenAI job, and this service runs offline. Send {"action": "train", '
        '"model": "NAME"} with "texts"',
    ),
]


@pytest.mark.parametrize(("input_", "error"), EXACT_ERRORS, ids=[e for _, e in EXACT_ERRORS])
async def test_a_bad_request_fails_naming_the_parameter(
    service: Service, input_: dict[str, Any], error: str
) -> None:
    reply = await call(service, input_)
    assert set(reply) == {"error"}
    assert reply["error"].startswith(error), reply["error"]


async def test_an_unknown_parameter_lists_the_allowed_ones(service: Service) -> None:
    reply = await call(service, {"action": "clear_session", "session_id": "a", "prompt": "hi"})
    assert reply == {
        "error": "prompt: unknown parameter for action 'clear_session'; allowed: action, mode, "
        "session_id"
    }


@pytest.mark.parametrize("job", [{}, {"input": None}, {"input": "generate"}])
async def test_a_job_without_an_input_object(service: Service, job: dict[str, Any]) -> None:
    reply = await service.handle(job)
    assert "error" in reply
    assert reply["error"].startswith(("prompt: is required", "input: must be a JSON object"))


async def test_a_library_error_is_prefixed_with_the_action(service: Service) -> None:
    await call(service, {"action": "init", "model": "tiny-short", **TINY})
    reply = await call(
        service, {"action": "train", "model": "tiny-short", "texts": ["hi"], "seq_length": 64}
    )
    assert reply["error"].startswith("train: "), reply
    assert "seq_len" in reply["error"]


# Generating and streaming.


async def test_the_users_request_streams_its_reply(
    service: Service, runtime: RecordingRuntime
) -> None:
    out = await service.handle({"id": "seed", "input": SEED_REQUEST})
    assert out["status"] == "success", out
    assert (out["mode"], out["prompt"], out["model"]) == (
        "layered",
        SEED_REQUEST["prompt"],
        "default",
    )
    assert out["vocab_size"] == 4000
    assert out["generated"].strip()
    assert out["stop_reason"] in ("eos", "user", "length")
    assert 0 < out["num_tokens"] <= 80
    assert runtime.chunks["seed"], "no stream chunks"
    assert "".join(runtime.chunks["seed"]) == out["generated"]


async def test_stream_false_posts_nothing(service: Service, runtime: RecordingRuntime) -> None:
    await generated(service, {"prompt": "こんにちは", "max_length": 20, "stream": False})
    assert runtime.chunks == {}


async def test_lost_stream_chunks_do_not_fail_the_job(
    service: Service, runtime: RecordingRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    runtime.fail_posts = True
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        text = await generated(service, {"prompt": "こんにちは", "max_length": 20, "seed": 4})
    assert text == await generated(service, {"prompt": "こんにちは", "max_length": 20, "seed": 4})
    assert "stream chunk lost: server gone" in caplog.text


async def test_a_seed_makes_a_reply_reproducible(service: Service) -> None:
    request = {"prompt": "Pythonについて教えて", "max_tokens": 30, "seed": 11, "top_k": 5}
    first = await generated(service, request)
    assert first == await generated(service, request)
    assert first != await generated(service, {**request, "seed": 12})


async def test_concurrent_generates_share_a_batch_and_match_solo_runs(service: Service) -> None:
    inputs = [{"prompt": f"質問{i}", "max_length": 30, "seed": i} for i in range(4)]
    solo = [await generated(service, i) for i in inputs]
    # A window long enough that the four requests surely meet, however slow the machine.
    service.batcher = MicroBatcher(window_s=0.5)
    batched = await asyncio.gather(*(generated(service, i) for i in inputs))
    assert service.batcher.batch_sizes == [4]
    assert list(batched) == solo  # per-row seeds: a batch changes nothing about a request
    status = await call(service, {"action": "status"})
    assert status["batches"] == 1


# Sessions.


async def test_session_history_shapes_the_prompt_and_outlives_the_service(
    service: Service, data_dir: Path, runtime: RecordingRuntime
) -> None:
    async def turn(svc: Service, session: str | None, prompt: str, seed: int) -> str:
        request: dict[str, Any] = {"prompt": prompt, "seed": seed, "max_length": 40}
        if session is not None:
            request["session_id"] = session
        return await generated(svc, request)

    a1 = await turn(service, "svc-A", "こんにちは", 1)
    a2 = await turn(service, "svc-A", "Pythonについて教えて", 2)
    assert await turn(service, "svc-B", "こんにちは", 1) == a1  # a new session has no history
    restarted = Service(data_dir, runtime=runtime)
    try:
        assert await turn(restarted, "svc-B", "Pythonについて教えて", 2) == a2
        assert await turn(restarted, None, "Pythonについて教えて", 2) != a2
        cleared = await call(restarted, {"action": "clear_session", "session_id": "svc-B"})
        assert cleared == {"status": "success", "session_id": "svc-B", "cleared": True}
        again = await call(restarted, {"action": "clear_session", "session_id": "svc-B"})
        assert again["cleared"] is False
        fresh = await turn(restarted, "svc-B", "Pythonについて教えて", 2)
        assert fresh == await turn(restarted, None, "Pythonについて教えて", 2)
    finally:
        restarted.sessions.close()


async def test_a_session_reply_names_its_session(service: Service) -> None:
    out = await call(service, {"prompt": "hi", "max_length": 5, "session_id": "svc-named"})
    assert out["session_id"] == "svc-named"
    assert "session_id" not in await call(service, {"prompt": "hi", "max_length": 5})


async def test_a_bad_session_id_stores_nothing(service: Service) -> None:
    before = service.sessions.count()
    reply = await call(service, {"prompt": "hi", "session_id": "abc\n"})
    assert reply["error"].startswith("session_id: must be 1-128 characters")
    assert service.sessions.count() == before


# Health, status, init and train.


async def test_health_loads_nothing(tmp_path: Path, runtime: RecordingRuntime) -> None:
    svc = Service(tmp_path, runtime=runtime)
    try:
        health = await call(svc, {"action": "health"})
        assert health["status"] == "healthy"
        assert health["model_initialized"] is False
        assert (health["layered_vocab_size"], health["brain_vocab_size"]) == (4000, None)
        assert svc.models.loaded() == []
    finally:
        svc.sessions.close()


@pytest.mark.slow
async def test_init_train_then_generate_with_progress(
    service: Service, runtime: RecordingRuntime
) -> None:
    init = await call(service, {"action": "init", "checkpoint": "svc-tiny", **TINY})
    assert (init["status"], init["mode"], init["model"]) == ("success", "layered", "svc-tiny")
    trained = await call(
        service,
        {"action": "train", "model": "svc-tiny", "texts": TEXTS, "epochs": 2, "seq_len": 16},
    )
    assert trained["status"] == "success", trained
    assert (trained["epochs"], trained["num_samples"], trained["mode"]) == (2, 40, "layered")
    last = runtime.progress[-1]
    assert last["status"] == "training" and last["model"] == "svc-tiny"
    assert last["step"] == last["total_steps"] == trained["steps"]  # the last step always shows
    out = await call(service, {"prompt": "question 3", "model": "svc-tiny", "max_length": 10})
    assert (out["status"], out["model"]) == ("success", "svc-tiny")
    status = await call(service, {"action": "status"})
    tiny = next(m for m in status["models"] if m["name"] == "svc-tiny")
    assert tiny["epochs"] == 2 and tiny["trained"]


async def test_train_before_generate_reports_its_training(service: Service) -> None:
    await call(service, {"action": "init", "model": "svc-tbg", **TINY})
    out = await call(
        service,
        {
            "prompt": "question 1",
            "model": "svc-tbg",
            "train_before_generate": True,
            "texts": TEXTS,
            "epochs": 1,
            "seq_length": 16,
            "max_length": 5,
        },
    )
    assert out["status"] == "success", out
    assert set(out["training"]) == {"epochs", "steps", "eval_loss"}
    assert out["training"]["epochs"] == 1


async def test_a_mode_that_does_not_match_the_model_fails(service: Service) -> None:
    await call(service, {"action": "init", "model": "svc-layered", **TINY})
    reply = await call(service, {"prompt": "hi", "model": "svc-layered", "mode": "brain"})
    assert reply == {"error": "mode: model 'svc-layered' is a layered model, not brain"}


async def test_health_reports_only_the_models_that_exist(
    tmp_path: Path, runtime: RecordingRuntime
) -> None:
    svc = Service(tmp_path, runtime=runtime)
    try:
        fresh = await call(svc, {"action": "health"})
        assert (fresh["layered_available"], fresh["brain_available"]) == (True, False)
        await call(svc, {"action": "init", "mode": "brain", **TINY})
        after = await call(svc, {"action": "health"})
        assert after["brain_available"] is True and after["brain_vocab_size"] == 4000
    finally:
        svc.sessions.close()


async def test_status_does_not_list_a_run_in_progress(
    tmp_path: Path, runtime: RecordingRuntime
) -> None:
    svc = Service(tmp_path, runtime=runtime)
    try:
        await call(svc, {"action": "init", "model": "mine", **TINY})
        # What a train job leaves while it runs: a staging copy with complete checkpoint files.
        shutil.copytree(svc.models.root / "mine", svc.models.root / ".staging-mine-0123456789ab")
        status = await call(svc, {"action": "status"})
        assert [m["name"] for m in status["models"]] == ["default", "mine"]
    finally:
        svc.sessions.close()


async def test_temperature_zero_decodes_greedily(service: Service) -> None:
    request = {"prompt": "Pythonについて教えて", "max_length": 30, "temperature": 0}
    first = await generated(service, {**request, "seed": 1})
    assert first.strip()
    assert first == await generated(service, {**request, "seed": 2})  # no randomness left
    assert first == await generated(service, {**request, "seed": 3, "top_k": 50, "top_p": 0.5})
    reply = await call(service, {**request, "temp_min": 0.5, "temp_max": 1.0})
    assert reply == {
        "error": "temp_min: cannot be combined with temperature 0 (greedy decoding); "
        "leave out temp_min and temp_max"
    }
