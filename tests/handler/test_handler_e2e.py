"""The NeuroQ handler through a real server and real worker processes: every action, the users'
seed request, the bad-input matrix, training with progress and cancel, sessions across a worker
restart, streaming, and the same handler under RunPod's official SDK."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from handler_harness import SEED_REQUEST, TINY, Harness, make_harness, start_sdk_worker
from harness import REPO, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

EP = "neuroq"
# A tiny corpus that a TINY model turns into enough windows for a few steps per epoch.
TEXTS = [
    {"user": f"question {i}", "assistant": f"answer number {i} is short and plain"}
    for i in range(40)
]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    yield from make_harness(tmp_path_factory)


@pytest.fixture(scope="module")
def ep(harness: Harness) -> str:
    harness.worker(EP, "--concurrency", "4")
    return EP


def test_seed_request_returns_generated_text(harness: Harness, ep: str) -> None:
    result = harness.call(ep, SEED_REQUEST)
    assert result["status"] == "COMPLETED", result
    out = result["output"]
    assert out["generated"].strip()
    assert out["status"] == "success"
    assert out["mode"] == "layered"
    assert out["prompt"] == SEED_REQUEST["prompt"]
    assert out["vocab_size"] == 4000


def run_example(
    harness: Harness, ep: str, script: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """Run one of examples/ as a user would, pointed at our server by the environment."""
    env = dict(os.environ)
    env.update(
        NEUROQ_API_URL=harness.server.base_url,
        RUNPOD_ENDPOINT_ID=ep,
        RUNPOD_API_KEY=harness.server.api_key,
    )
    return subprocess.run(
        [sys.executable, str(REPO / "examples" / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_users_simple_request_script_runs_end_to_end(harness: Harness, ep: str) -> None:
    """examples/simple_request.py, as the README's run command uses it, against our server."""
    done = run_example(harness, ep, "simple_request.py", 120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "no generated text printed"


def test_users_detailed_example_script_runs_end_to_end(harness: Harness, ep: str) -> None:
    """examples/example_request.py: generate, a session, then init + train + generate."""
    done = run_example(harness, ep, "example_request.py", 300)
    assert done.returncode == 0, done.stdout + done.stderr
    for title in ("health", "Q: ありがとう", "init", "train", "generate (trained)"):
        assert f"{title}: " in done.stdout


def test_health_and_status(harness: Harness, ep: str) -> None:
    health = harness.call(ep, {"action": "health"})["output"]
    assert health["status"] == "healthy"
    assert health["layered_available"] is True
    status = harness.call(ep, {"action": "status"})["output"]
    assert status["status"] == "ok"
    assert "default" in [m["name"] for m in status["models"]]


BAD_INPUTS = [
    ({"action": "dance"}, "action: must be one of health, status, init, train, generate"),
    ({"action": 3}, "action: must be one of"),
    ({"action": "pretrain_openai"}, "action: 'pretrain_openai' is not available"),
    ({"mode": "quantum", "prompt": "hi"}, "mode: must be one of layered, brain"),
    ({"prompt": ""}, "prompt: must be a non-empty string"),
    ({"prompt": 5}, "prompt: must be a string"),
    ({"prompt": "x" * 4001}, "prompt: is 4001 characters long; the limit is 4000"),
    ({"max_length": 10}, "prompt: is required"),
    ({"prompt": "hi", "max_length": "80"}, "max_length: must be an integer in [1, 150]"),
    ({"prompt": "hi", "max_length": 151}, "max_length: must be an integer in [1, 150]"),
    ({"prompt": "hi", "max_tokens": 0}, "max_tokens: must be an integer in [1, 150]"),
    ({"prompt": "hi", "temperature": "hot"}, "temperature: must be a number in [0.0, 10.0]"),
    ({"prompt": "hi", "temperature": -0.1}, "temperature: must be a number in [0.0, 10.0]"),
    ({"prompt": "hi", "top_k": 2.5}, "top_k: must be an integer in [0, 50]"),
    ({"prompt": "hi", "top_k": 51}, "top_k: must be an integer in [0, 50]"),
    ({"prompt": "hi", "top_p": 1.5}, "top_p: must be a number in (0.0, 1.0]"),
    ({"prompt": "hi", "repetition_penalty": 0.5}, "repetition_penalty: must be a number in"),
    ({"prompt": "hi", "repetition_penalty": None}, "repetition_penalty: must be a number in"),
    ({"prompt": "hi", "temp_min": 0.5}, "temp_max: temp_min and temp_max must be given"),
    ({"prompt": "hi", "stream": "yes"}, "stream: must be true or false"),
    ({"prompt": "hi", "session_id": "../x"}, "session_id: must be 1-128 characters"),
    ({"prompt": "hi", "model": "../../etc"}, "model: must be a checkpoint name"),
    ({"prompt": "hi", "checkpoint": "a/b"}, "checkpoint: must be a checkpoint name"),
    ({"prompt": "hi", "model": "nosuchmodel"}, "model: no checkpoint named 'nosuchmodel'"),
    ({"prompt": "hi", "mode": "brain"}, "model: no checkpoint named 'brain'"),
    ({"prompt": "hi", "openai_api_key": "k"}, "openai_api_key: unknown parameter"),
    ({"action": "train", "epochs": 0}, "epochs: must be an integer in [1, 200]"),
    ({"action": "train", "texts": "one text"}, "texts: must be a non-empty list"),
    ({"action": "train", "texts": [1]}, "texts[0]: must be a string or an object"),
    ({"action": "train", "learning_rate": -1}, "learning_rate: must be a number in (0.0, 1.0]"),
    ({"action": "init", "embed_dim": 0}, "embed_dim: must be an integer in [4, 1024]"),
    ({"action": "init", "dropout": 2}, "dropout: must be a number in [0.0, 0.9]"),
    ({"action": "clear_session"}, "session_id: is required for action 'clear_session'"),
]


@pytest.mark.parametrize(("input_", "message"), BAD_INPUTS, ids=[str(i) for i, _ in BAD_INPUTS])
def test_bad_input_fails_naming_the_parameter(
    harness: Harness, ep: str, input_: dict[str, Any], message: str
) -> None:
    result = harness.call(ep, input_)
    assert result["status"] == "FAILED", result
    assert message in result["error"], result["error"]


def test_worker_survives_the_bad_input_matrix(harness: Harness, ep: str) -> None:
    ids = [harness.run(ep, i) for i, _ in BAD_INPUTS[:8]]
    assert all(harness.wait_done(ep, i)["status"] == "FAILED" for i in ids)
    assert harness.call(ep, {"prompt": "こんにちは", "max_length": 5})["status"] == "COMPLETED"
    assert all(w.proc.poll() is None for w in harness.workers)


def test_stream_chunks_concatenate_to_the_final_text(harness: Harness, ep: str) -> None:
    job_id = harness.run(ep, {"prompt": "Pythonについて教えて", "max_length": 60, "seed": 3})
    chunks = harness.stream(ep, job_id)
    final = harness.wait_done(ep, job_id)
    assert final["status"] == "COMPLETED", final
    assert chunks, "no stream chunks"
    assert all(isinstance(c, str) for c in chunks)
    assert "".join(chunks) == final["output"]["generated"]


def test_concurrent_generates_are_batched_and_match_solo_runs(harness: Harness, ep: str) -> None:
    inputs = [
        {"prompt": f"質問{i}", "max_length": 30, "seed": i, "stream": False} for i in range(4)
    ]
    ids = [harness.run(ep, i) for i in inputs]
    batched = [harness.wait_done(ep, i)["output"]["generated"] for i in ids]
    solo = [harness.call(ep, i)["output"]["generated"] for i in inputs]
    assert batched == solo  # per-row seeds: a batch changes nothing about a request
    status = harness.call(ep, {"action": "status"})["output"]
    assert status["batches"] > 0


def _wait_for_progress(harness: Harness, ep: str, job_id: str) -> dict[str, Any]:
    def progress() -> dict[str, Any] | None:
        result = harness.status(ep, job_id, wait_ms=200)
        assert result["status"] in ("IN_QUEUE", "IN_PROGRESS"), result
        output = result.get("output")
        return output if isinstance(output, dict) and "step" in output else None

    found: dict[str, Any] = wait_for(progress, 60, "training progress", 0.05)
    return found


def test_init_train_progress_then_generate_uses_the_checkpoint(harness: Harness, ep: str) -> None:
    init = harness.call(ep, {"action": "init", "model": "tiny", **TINY})
    assert init["status"] == "COMPLETED", init
    assert init["output"]["model"] == "tiny"
    assert (harness.data_dir / "checkpoints" / "tiny" / "model.safetensors").is_file()

    job_id = harness.run(
        ep,
        {"action": "train", "model": "tiny", "texts": TEXTS * 3, "epochs": 2, "seq_length": 16},
    )
    progress = _wait_for_progress(harness, ep, job_id)
    assert {"epoch", "step", "loss", "tokens_per_s"} <= set(progress)
    trained = harness.wait_done(ep, job_id)
    assert trained["status"] == "COMPLETED", trained
    assert trained["output"]["epochs"] == 2

    status = harness.call(ep, {"action": "status"})["output"]
    tiny = next(m for m in status["models"] if m["name"] == "tiny")
    assert tiny["epochs"] == 2 and tiny["trained"]
    gen = harness.call(ep, {"prompt": "question 3", "model": "tiny", "seed": 0})
    assert gen["status"] == "COMPLETED", gen
    assert gen["output"]["model"] == "tiny"
    assert gen["output"]["vocab_size"] == 4000


def test_train_before_generate(harness: Harness, ep: str) -> None:
    harness.call(ep, {"action": "init", "model": "tiny-tbg", **TINY})
    result = harness.call(
        ep,
        {
            "prompt": "question 1",
            "model": "tiny-tbg",
            "train_before_generate": True,
            "texts": TEXTS,
            "epochs": 1,
            "seq_length": 16,
        },
    )
    assert result["status"] == "COMPLETED", result
    assert result["output"]["training"]["epochs"] == 1


def test_cancel_mid_train_keeps_the_previous_checkpoint(harness: Harness, ep: str) -> None:
    harness.call(ep, {"action": "init", "model": "tiny-cancel", **TINY})
    weights = harness.data_dir / "checkpoints" / "tiny-cancel" / "model.safetensors"
    before = weights.read_bytes()
    job_id = harness.run(
        ep,
        {
            "action": "train",
            "model": "tiny-cancel",
            "texts": TEXTS * 20,
            "epochs": 200,
            "seq_length": 16,
        },
    )
    _wait_for_progress(harness, ep, job_id)
    harness.http.post(f"/{ep}/cancel/{job_id}").raise_for_status()
    assert harness.wait_done(ep, job_id)["status"] == "CANCELLED"
    # The train thread stops at its next step and removes its staging directory.
    root = harness.data_dir / "checkpoints"
    wait_for(
        lambda: [p.name for p in root.iterdir() if p.name.startswith(".staging-tiny-cancel")],
        20,
        "the staging directory to be removed",
        0.05,
        until=lambda staging: not staging,
    )
    assert weights.read_bytes() == before
    gen = harness.call(ep, {"prompt": "question 1", "model": "tiny-cancel", "max_length": 5})
    assert gen["status"] == "COMPLETED", gen


def test_session_history_shapes_the_prompt_and_survives_a_worker_restart(
    harness: Harness,
) -> None:
    ep = "sessions"
    worker = harness.worker(ep)

    def turn(session: str | None, prompt: str, seed: int) -> str:
        input_: dict[str, Any] = {"prompt": prompt, "seed": seed, "max_length": 40}
        if session is not None:
            input_["session_id"] = session
        result = harness.call(ep, input_)
        assert result["status"] == "COMPLETED", result
        return str(result["output"]["generated"])

    a1 = turn("A", "こんにちは", 1)
    a2 = turn("A", "Pythonについて教えて", 2)
    assert turn("B", "こんにちは", 1) == a1
    worker.stop()
    harness.worker(ep)
    assert turn("B", "Pythonについて教えて", 2) == a2  # B's first turn came back from disk
    assert turn(None, "Pythonについて教えて", 2) != a2  # and it did change the prompt

    cleared = harness.call(ep, {"action": "clear_session", "session_id": "B"})["output"]
    assert cleared == {"status": "success", "session_id": "B", "cleared": True}
    assert turn("B", "Pythonについて教えて", 2) == turn(None, "Pythonについて教えて", 2)


def test_handler_runs_under_the_official_runpod_sdk(harness: Harness) -> None:
    ep = "sdk"
    worker = start_sdk_worker(harness, ep)
    try:
        job_id = harness.run(ep, {**SEED_REQUEST, "seed": 5})
        chunks = harness.stream(ep, job_id)
        result = harness.wait_done(ep, job_id)
        assert result["status"] == "COMPLETED", result
        assert result["output"]["generated"].strip()
        assert "".join(chunks) == result["output"]["generated"]
        bad = harness.call(ep, {"prompt": "hi", "top_k": 99})
        assert bad["status"] == "FAILED"
        assert "top_k: must be an integer in [0, 50]" in bad["error"]
    finally:
        # The SDK's own shutdown waits on its long-polls; nothing to test there. Its forked
        # heartbeat process outlives a SIGKILL of its parent, so the whole group goes.
        worker.kill()
