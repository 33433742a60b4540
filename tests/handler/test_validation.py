"""`validate()` turns a job's input into one request dataclass per action: aliases land on their
canonical fields, absent parameters keep the dataclass's (or SamplingParams') defaults, and the
handler restates none of them."""

from __future__ import annotations

from typing import Any

import pytest

from neuroq.handler.requests import (
    Architecture,
    ClearSessionRequest,
    GenerateRequest,
    HealthRequest,
    InitRequest,
    ResetModelRequest,
    StatusRequest,
    TrainOptions,
    TrainRequest,
)
from neuroq.handler.validation import InputError, validate
from neuroq.model.sampling import SamplingParams


def test_the_users_request_becomes_a_generate_request() -> None:
    request = validate(
        {
            "action": "generate",
            "mode": "layered",
            "prompt": "ChatGPTについて教えて",
            "max_length": 80,
            "temperature": 0.7,
            "repetition_penalty": 2.5,
        }
    )
    assert request == GenerateRequest(
        prompt="ChatGPTについて教えて",
        mode="layered",
        sampling=SamplingParams(max_length=80, temperature=0.7, repetition_penalty=2.5),
    )


def test_absent_parameters_keep_the_library_defaults() -> None:
    request = validate({"prompt": "hi"})
    assert isinstance(request, GenerateRequest)
    assert request.sampling == SamplingParams()
    assert (request.model, request.mode, request.session_id) == (None, None, None)
    assert (request.stream, request.train_before_generate) == (True, False)
    assert request.training.train_kwargs() == {"epochs": 5}  # the rest: train()'s defaults


def test_aliases_land_on_their_canonical_fields() -> None:
    generate = validate({"prompt": "hi", "max_tokens": 7, "checkpoint": "mine"})
    assert isinstance(generate, GenerateRequest)
    assert (generate.sampling.max_length, generate.model) == (7, "mine")
    train = validate({"action": "train", "lr": 0.01, "seq_len": 32, "training_data": ["a b"]})
    assert train == TrainRequest(
        training=TrainOptions(texts=["a b"], learning_rate=0.01, seq_length=32)
    )
    assert train.training.train_kwargs() == {"epochs": 5, "lr": 0.01, "seq_len": 32}


def test_numbers_are_typed_and_temperature_pairs_kept() -> None:
    request = validate({"prompt": "hi", "temperature": 1, "temp_min": 1, "temp_max": 2})
    assert isinstance(request, GenerateRequest)
    assert request.sampling.temperature_range == (1.0, 2.0)
    assert isinstance(request.sampling.temperature, float)


def test_a_generate_seed_also_seeds_its_training() -> None:
    request = validate({"prompt": "hi", "seed": 9, "train_before_generate": True})
    assert isinstance(request, GenerateRequest)
    assert request.sampling.seed == request.training.seed == 9


@pytest.mark.parametrize(
    ("input_", "expected"),
    [
        ({"action": "health"}, HealthRequest()),
        ({"action": "status"}, StatusRequest()),
        ({"action": "clear_session", "session_id": "s.1"}, ClearSessionRequest("s.1")),
        ({"action": "init"}, InitRequest(mode="layered")),
        (
            {"action": "init", "mode": "brain", "num_neurons": 64, "dropout": 0},
            InitRequest(mode="brain", architecture=Architecture(num_neurons=64, dropout=0.0)),
        ),
        ({"action": "train", "epochs": 2}, TrainRequest(training=TrainOptions(epochs=2))),
        (
            {"action": "train", "model": "m", "from_model": "default", "overwrite": False},
            TrainRequest(model="m", from_model="default"),
        ),
        ({"action": "init", "overwrite": True}, InitRequest(overwrite=True)),
        ({"action": "reset_model"}, ResetModelRequest()),
        ({"action": "reset_model", "checkpoint": "default"}, ResetModelRequest("default")),
    ],
)
def test_each_action_has_its_request(input_: dict[str, Any], expected: object) -> None:
    assert validate(input_) == expected


def test_architecture_overrides_are_the_given_parameters_only() -> None:
    request = validate({"action": "train", "embed_dim": 16, "max_seq_len": 32})
    assert isinstance(request, TrainRequest)
    assert request.architecture.overrides() == {"embed_dim": 16, "max_seq_len": 32}
    assert Architecture().overrides() == {}


def test_errors_name_the_spelling_the_user_sent() -> None:
    with pytest.raises(InputError, match=r"^max_tokens: must be an integer in \[1, 150\], got 0$"):
        validate({"prompt": "hi", "max_tokens": 0})
    with pytest.raises(InputError, match=r"^seed: must be an integer in \[0, 2147483647\]"):
        validate({"action": "train", "seed": -1})
