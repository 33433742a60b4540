"""The handler process's settings from the environment (`HandlerSettings.from_env`):
NEUROQ_TORCH_THREADS (one thread by default), NEUROQ_DECODE_PRECISION (fp32) and
NEUROQ_DECODE_COMPILE (off) warn and fall back on an unusable value instead of failing every job;
NEUROQ_SESSION_TTL_S and NEUROQ_CONCURRENCY are numbers. `Service.from_env` applies them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neuroq.config import HandlerSettings
from neuroq.handler.actions import Service
from neuroq.handler.models import ModelRegistry


def settings(name: str, raw: str) -> HandlerSettings:
    return HandlerSettings.from_env({f"NEUROQ_{name}": raw})


@pytest.fixture
def keep_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_defaults() -> None:
    assert HandlerSettings.from_env({}) == HandlerSettings(
        session_ttl_s=86400.0,
        torch_threads=1,
        decode_precision="fp32",
        decode_compile=False,
        concurrency=1,
    )


@pytest.mark.parametrize(("raw", "expected"), [("", 1), ("2", 2), (" 3 ", 3)])
def test_thread_setting_values(raw: str, expected: int) -> None:
    assert settings("TORCH_THREADS", raw).torch_threads == expected


@pytest.mark.parametrize("raw", ["0", "-2", "many", "1.5"])
def test_unusable_values_warn_and_use_the_default(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert settings("TORCH_THREADS", raw).torch_threads == 1
    assert "NEUROQ_TORCH_THREADS" in caplog.text


def test_the_service_applies_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_threads: None
) -> None:
    monkeypatch.setenv("NEUROQ_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEUROQ_TORCH_THREADS", "2")
    monkeypatch.setenv("NEUROQ_DECODE_PRECISION", "int8")
    monkeypatch.setenv("NEUROQ_DECODE_COMPILE", "1")
    monkeypatch.setenv("NEUROQ_SESSION_TTL_S", "60")
    service = Service.from_env()
    assert torch.get_num_threads() == 2
    assert service.data_dir == tmp_path
    assert service.sessions.ttl_s == 60.0
    engine = service.models.engine("default")
    assert (engine.precision, engine.compile) == ("int8", True)
    for name in ("NEUROQ_TORCH_THREADS", "NEUROQ_DECODE_PRECISION", "NEUROQ_DECODE_COMPILE"):
        monkeypatch.delenv(name)
    service = Service.from_env()
    assert torch.get_num_threads() == 1
    engine = service.models.engine("default")
    assert (engine.precision, engine.compile) == ("fp32", False)


@pytest.mark.parametrize(("raw", "expected"), [("", "fp32"), ("fp16", "fp16"), (" INT8 ", "int8")])
def test_decode_precision_values(raw: str, expected: str) -> None:
    assert settings("DECODE_PRECISION", raw).decode_precision == expected


@pytest.mark.parametrize(
    ("raw", "expected"), [("", False), ("0", False), ("no", False), ("1", True), (" Yes ", True)]
)
def test_decode_compile_values(raw: str, expected: bool) -> None:
    assert settings("DECODE_COMPILE", raw).decode_compile is expected


def test_unusable_decode_precision_warns_and_uses_fp32(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert settings("DECODE_PRECISION", "int4").decode_precision == "fp32"
    assert "NEUROQ_DECODE_PRECISION" in caplog.text


def test_numbers_are_parsed_and_a_bad_one_names_its_variable() -> None:
    assert settings("SESSION_TTL_S", "3600").session_ttl_s == 3600.0
    assert settings("CONCURRENCY", "8").concurrency == 8
    with pytest.raises(ValueError, match=r"^NEUROQ_CONCURRENCY='many'"):
        settings("CONCURRENCY", "many")


def test_int8_on_a_gpu_worker_becomes_fp16(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The int8 kernel is CPU-only; a GPU worker configured for it decodes in fp16 instead of
    failing every generate (no GPU needed: nothing is moved to the device here)."""
    with caplog.at_level(logging.WARNING, logger="neuroq.handler"):
        assert ModelRegistry(tmp_path, device="cuda", precision="int8")._precision() == "fp16"
    assert "int8" in caplog.text
    assert ModelRegistry(tmp_path, device="cpu", precision="int8")._precision() == "int8"
