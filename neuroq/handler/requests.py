"""What a validated job asks for: one frozen dataclass per action, built by `validate()`.

Each default a handler request has lives here or in the library the request feeds, never in
both: sampling parameters are a `SamplingParams` (its defaults are the original handler's
`generate` defaults), and the unset numbers of a train run are left to
`neuroq.model.train.train`. The handler reads these objects and restates no default itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from neuroq.model.sampling import SamplingParams

#: the mode of a model created without `mode`
DEFAULT_MODE = "layered"
#: the model a request without `model` uses, per mode
DEFAULT_NAMES = {"layered": "default", "brain": "brain"}
#: names that ship with the package: a train or init job replaces one only with `overwrite`,
#: since every request without `model` would answer from the result
PROTECTED = ("default",)

#: a training text: a reply alone, or a {"user": ..., "assistant": ...} exchange
Text = str | dict[str, str]


def model_name(model: str | None, mode: str | None) -> str:
    """The checkpoint a request names: `model`, else its mode's default one."""
    return model if model is not None else DEFAULT_NAMES[mode or DEFAULT_MODE]


@dataclass(frozen=True)
class Architecture:
    """Model parameters a request gave; None leaves the value to the model's config (or, for
    `train`, to the existing checkpoint's architecture when none is given at all)."""

    embed_dim: int | None = None
    hidden_dim: int | None = None
    #: layered mode: another name for hidden_dim; brain mode: the brain's neuron count
    num_neurons: int | None = None
    num_heads: int | None = None
    num_layers: int | None = None
    max_seq_len: int | None = None
    dropout: float | None = None
    lambda_entangle: float | None = None

    def overrides(self) -> dict[str, Any]:
        """The given parameters by name (empty when the request gave none)."""
        values = ((f.name, getattr(self, f.name)) for f in fields(self))
        return {name: value for name, value in values if value is not None}


@dataclass(frozen=True)
class TrainOptions:
    """How a train run goes. None leaves a value to `neuroq.model.train.train`'s default;
    `epochs` has none there, so the handler's is here."""

    #: None trains on the shipped corpus
    texts: list[Text] | None = None
    epochs: int = 5
    batch_size: int | None = None
    learning_rate: float | None = None
    seq_length: int | None = None
    seed: int | None = None

    def train_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `neuroq.model.train.train` (its own names: `lr`, `seq_len`)."""
        given = {
            "batch_size": self.batch_size,
            "lr": self.learning_rate,
            "seq_len": self.seq_length,
            "seed": self.seed,
        }
        return {"epochs": self.epochs, **{k: v for k, v in given.items() if v is not None}}


@dataclass(frozen=True)
class HealthRequest:
    """Liveness and which models exist; loads nothing."""

    action: ClassVar[str] = "health"


@dataclass(frozen=True)
class StatusRequest:
    """The worker's models, sessions and batches."""

    action: ClassVar[str] = "status"


@dataclass(frozen=True)
class ClearSessionRequest:
    """Forget a conversation session."""

    action: ClassVar[str] = "clear_session"

    session_id: str


@dataclass(frozen=True)
class InitRequest:
    """Write an untrained checkpoint. `model` None means the mode's default name; replacing
    `default` needs `overwrite` (see PROTECTED)."""

    action: ClassVar[str] = "init"

    model: str | None = None
    mode: str = DEFAULT_MODE
    architecture: Architecture = field(default_factory=Architecture)
    overwrite: bool = False


@dataclass(frozen=True)
class TrainRequest:
    """Train a checkpoint. `mode` None keeps the existing checkpoint's mode (layered for a new
    one), which an explicit choice must be told apart from."""

    action: ClassVar[str] = "train"

    model: str | None = None
    mode: str | None = None
    architecture: Architecture = field(default_factory=Architecture)
    training: TrainOptions = field(default_factory=TrainOptions)
    #: replacing `default` needs this (see PROTECTED)
    overwrite: bool = False
    #: a checkpoint to fine-tune (its weights, architecture and tokenizer); None: fresh weights
    from_model: str | None = None


@dataclass(frozen=True)
class ResetModelRequest:
    """Delete the data directory's trained copy of `default`, so the shipped model serves
    again (the only name with a shipped version)."""

    action: ClassVar[str] = "reset_model"

    model: str = "default"


@dataclass(frozen=True)
class GenerateRequest:
    """Reply to `prompt`. `mode` None accepts the checkpoint's mode; `architecture` and
    `training` apply only with `train_before_generate`."""

    action: ClassVar[str] = "generate"

    prompt: str
    model: str | None = None
    mode: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    session_id: str | None = None
    stream: bool = True
    train_before_generate: bool = False
    architecture: Architecture = field(default_factory=Architecture)
    training: TrainOptions = field(default_factory=TrainOptions)
    overwrite: bool = False
    from_model: str | None = None


Request = (
    HealthRequest
    | StatusRequest
    | ClearSessionRequest
    | InitRequest
    | TrainRequest
    | ResetModelRequest
    | GenerateRequest
)
