"""The handler process's torch settings from the environment: NEUROQ_TORCH_THREADS (one thread by
default), NEUROQ_DECODE_PRECISION (fp32) and NEUROQ_DECODE_COMPILE (off); an unusable value warns
and falls back
instead of failing every job."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neuroq.handler.actions import (
    DEFAULT_TORCH_THREADS,
    Service,
    decode_compile,
    decode_precision,
    torch_threads,
)
from neuroq.handler.models import ModelRegistry


@pytest.fixture
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(("raw", "expected"), [(None, 1), ("", 1), ("2", 2), (" 3 ", 3)])
def test_thread_setting_values(raw: str | None, expected: int) -> None:
    assert DEFAULT_TORCH_THREADS == 1
    assert torch_threads(raw) == expected


@pytest.mark.parametrize("raw", ["0", "-2", "many", "1.5"])
def test_unusable_values_warn_and_use_the_default(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert torch_threads(raw) == DEFAULT_TORCH_THREADS
    assert "NEUROQ_TORCH_THREADS" in caplog.text


def test_the_service_applies_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_threads: None
) -> None:
    monkeypatch.setenv("NEUROQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEUROQ_TORCH_THREADS", "2")
    monkeypatch.setenv("NEUROQ_DECODE_PRECISION", "int8")
    monkeypatch.setenv("NEUROQ_DECODE_COMPILE", "1")
    service = Service.from_env()
    assert torch.get_num_threads() == 2
    engine = service.models.engine("default")
    assert (engine.precision, engine.compile) == ("int8", True)
    for name in ("NEUROQ_TORCH_THREADS", "NEUROQ_DECODE_PRECISION", "NEUROQ_DECODE_COMPILE"):
        monkeypatch.delenv(name)
    service = Service.from_env()
    assert torch.get_num_threads() == 1
    engine = service.models.engine("default")
    assert (engine.precision, engine.compile) == ("fp32", False)


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, "fp32"), ("", "fp32"), ("fp16", "fp16"), (" INT8 ", "int8")]
)
def test_decode_precision_values(raw: str | None, expected: str) -> None:
    assert decode_precision(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, False), ("", False), ("0", False), ("1", True), (" Yes ", True)]
)
def test_decode_compile_values(raw: str | None, expected: bool) -> None:
    assert decode_compile(raw) is expected


def test_unusable_decode_precision_warns_and_uses_fp32(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert decode_precision("int4") == "fp32"
    assert "NEUROQ_DECODE_PRECISION" in caplog.text


def test_int8_on_a_gpu_worker_becomes_fp16(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The int8 kernel is CPU-only; a GPU worker configured for it decodes in fp16 instead of
    failing every generate (no GPU needed: nothing is moved to the device here)."""
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert ModelRegistry(tmp_path, device="cuda", precision="int8")._precision() == "fp16"
    assert "int8" in caplog.text
    assert ModelRegistry(tmp_path, device="cpu", precision="int8")._precision() == "int8"
