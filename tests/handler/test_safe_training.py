"""The shipped `default` model through `Service.handle`: a train or init request cannot replace it
by leaving out `model`, `overwrite: true` can, `reset_model` brings the shipped one back, and
`from_model` fine-tunes an existing checkpoint instead of starting from fresh weights."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from neuroq.handler.actions import Service
from neuroq.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint

TINY = {"embed_dim": 16, "hidden_dim": 32, "num_heads": 2, "num_layers": 1, "max_seq_len": 32}
TEXTS = [{"user": f"question {i}", "assistant": f"answer number {i} is plain"} for i in range(40)]
RUN = {"texts": TEXTS, "epochs": 1, "seq_length": 16}
TRAIN = {"action": "train", **RUN}
GREEDY = {"prompt": "ChatGPTについて教えて", "max_length": 30, "temperature": 0}
PROTECTED = "model: 'default' is the model every request without \"model\" uses"


class _NoRuntime:
    def report_progress(self, job: dict[str, Any], data: dict[str, Any]) -> None:
        pass

    def stream(self, job: dict[str, Any]) -> Any:
        raise AssertionError("these tests do not stream")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, runtime=_NoRuntime())
    yield svc
    svc.sessions.close()


_job_ids = iter(range(1_000_000))


async def call(service: Service, input_: dict[str, Any]) -> dict[str, Any]:
    return await service.handle({"id": f"job-{next(_job_ids)}", "input": input_})


async def reply(service: Service, input_: dict[str, Any]) -> str:
    out = await call(service, {**input_, "stream": False})
    assert out["status"] == "success", out
    return str(out["generated"])


@pytest.mark.parametrize(
    "request_",
    [TRAIN, {"action": "init", **TINY}, {**GREEDY, "train_before_generate": True, **RUN}],
    ids=["train", "init", "train_before_generate"],
)
async def test_the_default_model_is_not_replaced_without_overwrite(
    service: Service, request_: dict[str, Any]
) -> None:
    shipped = await reply(service, GREEDY)
    out = await call(service, request_)
    assert set(out) == {"error"}
    assert out["error"].startswith(PROTECTED), out["error"]
    assert '"overwrite": true' in out["error"] and '"model": "' in out["error"]
    assert not (service.models.root / "default").exists()
    assert await reply(service, GREEDY) == shipped


async def test_overwrite_replaces_default_and_reset_model_restores_the_shipped_one(
    service: Service,
) -> None:
    shipped = await reply(service, GREEDY)
    assert (await call(service, {**TRAIN, "overwrite": True, **TINY}))["status"] == "success"
    assert (await call(service, {"action": "status"}))["models"][0]["epochs"] == 1
    assert await reply(service, GREEDY) != shipped  # every request without `model` sees it

    out = await call(service, {"action": "reset_model"})
    assert out == {
        "status": "success",
        "model": "default",
        "reset": True,
        "message": "model 'default' is the shipped one again; the trained copy was deleted",
    }
    assert await reply(service, GREEDY) == shipped
    assert (await call(service, {"action": "reset_model", "model": "default"}))["reset"] is False


async def test_reset_model_refuses_a_model_without_a_shipped_version(service: Service) -> None:
    out = await call(service, {"action": "reset_model", "model": "mine"})
    assert out == {"error": "model: only 'default' has a shipped version to go back to, not 'mine'"}


async def test_training_a_named_model_leaves_default_alone(service: Service) -> None:
    out = await call(service, {**TRAIN, "model": "mine", **TINY})
    assert (out["status"], out["model"]) == ("success", "mine")
    assert not (service.models.root / "default").exists()


@pytest.mark.slow
async def test_from_model_fine_tunes_the_existing_weights(service: Service) -> None:
    # A learning rate this small barely moves a weight: the result is the shipped model,
    # whereas fresh weights would share nothing with it.
    out = await call(
        service,
        {**TRAIN, "model": "tuned", "from_model": "default", "learning_rate": 1e-9},
    )
    assert out["status"] == "success", out
    assert (out["model"], out["from_model"]) == ("tuned", "default")
    shipped, _, _ = load_checkpoint(DEFAULT_CHECKPOINT)
    tuned, _, meta = load_checkpoint(service.models.root / "tuned")
    assert tuned.config == shipped.config
    assert meta["from_model"] == "default"
    for (name, a), b in zip(shipped.state_dict().items(), tuned.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-4), name


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"from_model": "nope"}, "from_model: no checkpoint named 'nope'"),
        (
            {"from_model": "default", "embed_dim": 32},
            "embed_dim: fine-tuning keeps the architecture of 'default'; "
            "leave out the model parameters",
        ),
        (
            {"from_model": "default", "mode": "brain"},
            "mode: model 'default' is a layered model, not brain",
        ),
        ({"from_model": "../x"}, "from_model: must be a checkpoint name"),
    ],
)
async def test_a_bad_from_model_request_names_the_parameter(
    service: Service, extra: dict[str, Any], error: str
) -> None:
    out = await call(service, {**TRAIN, "model": "tuned", **extra})
    assert set(out) == {"error"}
    assert out["error"].startswith(error), out["error"]


async def test_a_request_body_sent_as_the_input_is_named(service: Service) -> None:
    out = await call(service, {"input": {"prompt": "hi"}})
    assert out == {
        "error": 'input: the job input is itself {"input": ...}: send the inner object as the input'
    }


@pytest.mark.slow
async def test_a_model_trained_by_the_cli_is_served_by_name(service: Service) -> None:
    corpus = service.data_dir / "corpus.txt"
    corpus.write_text("\n".join(f"answer number {i} is plain" for i in range(200)) + "\n")
    proc = subprocess.run(
        [sys.executable, "-m", "neuroq", "train", "--corpus", str(corpus), "--model", "cli-made",
         "--data-dir", str(service.data_dir), "--epochs", "1", "--seq-len", "16",
         "--embed-dim", "16", "--hidden-dim", "32", "--num-heads", "2", "--num-layers", "1",
         "--max-seq-len", "32", "--vocab-size", "300", "--threads", "1"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = await call(
        service, {"prompt": "answer", "model": "cli-made", "max_length": 5, "stream": False}
    )
    assert (out["status"], out["model"]) == ("success", "cli-made"), out
