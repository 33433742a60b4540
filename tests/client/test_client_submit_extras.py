"""What the client makes of a submit's `X-NeuroQ-Warning` (logged, and kept on the job) and the
runpod SDK's `output(timeout=...)` spelling, on both clients through one mock transport."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from neuroq import AsyncEndpoint, Endpoint
from neuroq.errors import ClientError

WARNING = "no worker has served endpoint 'typo' yet"


def server(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/run"):
        return httpx.Response(
            200, json={"id": "j1", "status": "IN_QUEUE"}, headers={"X-NeuroQ-Warning": WARNING}
        )
    return httpx.Response(200, json={"id": "j1", "status": "COMPLETED", "output": 42})


def run_both(scenario: str) -> list[Any]:
    """Run `scenario` on the sync client and on the asyncio one; both results."""
    results = []
    with Endpoint("typo", api_key="k", transport=httpx.MockTransport(server)) as ep:
        results.append(SYNC[scenario](ep))

    async def on_async() -> Any:
        async with AsyncEndpoint("typo", api_key="k", transport=httpx.MockTransport(server)) as aep:
            return await ASYNC[scenario](aep)

    results.append(asyncio.run(on_async()))
    return results


async def _async_warning(ep: AsyncEndpoint) -> Any:
    return (await ep.run(1)).warning


async def _async_output_timeout(ep: AsyncEndpoint) -> Any:
    return await (await ep.run(1)).output(timeout=5)


SYNC = {
    "warning": lambda ep: ep.run(1).warning,
    "output_timeout": lambda ep: ep.run(1).output(timeout=5),
}
ASYNC = {"warning": _async_warning, "output_timeout": _async_output_timeout}


def test_a_submit_warning_is_logged_and_kept_on_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="neuroq.client"):
        assert run_both("warning") == [WARNING, WARNING]
    assert [r.getMessage() for r in caplog.records] == [WARNING, WARNING]


def test_output_accepts_the_sdks_timeout_keyword() -> None:
    assert run_both("output_timeout") == [42, 42]


def test_timeout_and_timeout_s_together_must_agree() -> None:
    with Endpoint("typo", api_key="k", transport=httpx.MockTransport(server)) as ep:
        job = ep.run(1)
        assert job.output(5, timeout=5) == 42
        with pytest.raises(ClientError, match="not both"):
            job.output(5, timeout=6)
