"""The NeuroQ handler's warm-up hook: `neuroq worker neuroq.handler:handler` runs it before its
first take, and it leaves the default model loaded in the very service the handler uses, so the
first job does not pay for loading it."""

from __future__ import annotations

from pathlib import Path

import pytest

import neuroq.handler as handler_module


async def test_warmup_loads_the_default_model_into_the_handlers_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEUROQ_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(
        handler_module,
        "_worker_service",
        handler_module._service(handler_module.WorkerRuntime(), None),
    )
    monkeypatch.setattr(
        handler_module, "handler", handler_module._handler_of(handler_module._worker_service)
    )
    await handler_module.warmup()
    service = await handler_module._worker_service()
    assert "default" in service.models.loaded()
    reply = await handler_module.handler({"id": "w1", "input": {"action": "status"}})
    assert isinstance(reply, dict)
    (default,) = [m for m in reply["models"] if m["name"] == "default"]
    assert default["loaded"] is True  # the handler's own service holds the warmed engine
