"""The scaler inside `neuroq serve`: reads the server's own store, starts workers against the
server's own address, and keeps their pidfiles in `data_dir/scaler`."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from neuroq.config import Settings
from neuroq.scaler.scaler import Scaler, ScalerBusy
from neuroq.scaler.source import StoreSource

log = logging.getLogger("neuroq.scaler")


def local_url(settings: Settings) -> str:
    """Where local workers reach this server: loopback when it listens on every interface."""
    if settings.scaler_url:
        return settings.scaler_url
    host = settings.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


async def run_in_server(app: Starlette) -> None:
    """The lifespan task: scale until the server stops, then drain the workers."""
    settings: Settings = app.state.settings
    scaler = Scaler(
        StoreSource(app.state.store),
        local_url(settings),
        app.state.keys.worker[0],
        settings.data_dir / "scaler",
        interval_s=settings.scaler_interval_s,
        stop_grace_s=settings.scaler_stop_grace_s,
        # three heartbeats per lease, so one lost ping never costs a job
        ping_interval_s=min(10.0, settings.worker_lost_s / 3),
    )
    app.state.scaler = scaler
    try:
        await scaler.run()
    except ScalerBusy as exc:
        log.warning("not scaling: %s", exc)
