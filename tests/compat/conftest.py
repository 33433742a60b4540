"""Fixtures of the RunPod compatibility suite; the harness itself is in sdk_harness.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runpod
from sdk_harness import Api, CountingProxy, SdkWorker, WebhookReceiver

# Each test module defines its own `server` fixture (with the settings its cases need); the
# fixtures below build on whichever server the module has.


@pytest.fixture(scope="module")
def api(server: Any) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.http.close()


@pytest.fixture(scope="module")
def sdk(server: Any) -> Iterator[None]:
    """Point the runpod client at our server, the runtime way the spec allows (1.1)."""
    saved = runpod.api_key, runpod.endpoint_url_base
    runpod.api_key = server.api_key
    runpod.endpoint_url_base = server.base_url
    yield
    runpod.api_key, runpod.endpoint_url_base = saved


@pytest.fixture(scope="module")
def proxy(server: Any) -> Iterator[CountingProxy]:
    counting = CountingProxy(server.url).start()
    yield counting
    counting.stop()


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
