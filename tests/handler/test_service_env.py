"""The handler process's torch thread count: one by default, NEUROQ_TORCH_THREADS otherwise, and
an unusable value warns and falls back instead of failing every job."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neuroq.handler.actions import DEFAULT_TORCH_THREADS, Service, torch_threads


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


def test_the_service_applies_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_threads: None
) -> None:
    monkeypatch.setenv("NEUROQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEUROQ_TORCH_THREADS", "2")
    Service.from_env()
    assert torch.get_num_threads() == 2
    monkeypatch.delenv("NEUROQ_TORCH_THREADS")
    Service.from_env()
    assert torch.get_num_threads() == 1
