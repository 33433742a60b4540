"""Fixtures of the RunPod compatibility suite; the harness itself is in sdk_harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sdk_harness import SdkWorker, WebhookReceiver


@pytest.fixture(scope="module")
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def sdk_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sdk")


@pytest.fixture(scope="module")
def workers() -> Iterator[list[SdkWorker]]:
    """Every SDK worker a module starts goes in here, so none outlives the module."""
    started: list[SdkWorker] = []
    yield started
    for worker in started:
        worker.kill()
