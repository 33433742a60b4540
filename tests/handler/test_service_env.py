"""The handler process's torch settings from the environment: NEUROQ_TORCH_THREADS (one thread by
default) and NEUROQ_DECODE_PRECISION (fp32 by default); an unusable value warns and falls back
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
    decode_precision,
    torch_threads,
)


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
    monkeypatch.setenv("NEUROQ_DECODE_PRECISION", "fp16")
    service = Service.from_env()
    assert torch.get_num_threads() == 2
    assert service.models.engine("default").precision == "fp16"
    monkeypatch.delenv("NEUROQ_TORCH_THREADS")
    monkeypatch.delenv("NEUROQ_DECODE_PRECISION")
    service = Service.from_env()
    assert torch.get_num_threads() == 1
    assert service.models.engine("default").precision == "fp32"


@pytest.mark.parametrize(
    ("raw", "expected"), [(None, "fp32"), ("", "fp32"), ("fp16", "fp16"), (" FP16 ", "fp16")]
)
def test_decode_precision_values(raw: str | None, expected: str) -> None:
    assert decode_precision(raw) == expected


def test_unusable_decode_precision_warns_and_uses_fp32(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert decode_precision("int4") == "fp32"
    assert "NEUROQ_DECODE_PRECISION" in caplog.text
