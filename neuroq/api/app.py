"""The HTTP application: routes, shared state, and the lifespan that opens the store.

Shared state, which the worker routes and the background task rely on by these exact names:
`app.state.settings` (Settings), `app.state.store` (JobStore), `app.state.keys` (auth.Keys).
The lifespan opens the store before the first request and runs `run_background` (sweeps and
webhook delivery) as a task for as long as the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api import client_routes, worker_routes
from neuroq.api.auth import load_keys
from neuroq.api.background import run_background
from neuroq.api.dashboard import install_dashboard
from neuroq.api.errors import EXCEPTION_HANDLERS
from neuroq.api.metrics import install_metrics
from neuroq.api.openapi import openapi_document
from neuroq.config import Settings
from neuroq.store.base import JobStore

log = logging.getLogger("neuroq.api")


async def openapi_json(request: Request) -> Response:
    return JSONResponse(openapi_document())


def create_app(settings: Settings, store: JobStore | None = None) -> Starlette:
    """Build the app. `store` defaults to the one `settings.store` names (SQLite in data_dir)."""
    if store is None:
        from neuroq.store import create_store

        store = create_store(settings)
    keys = load_keys(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await app.state.store.open()
        background = asyncio.create_task(run_background(app), name="neuroq-background")
        background.add_done_callback(_report_background_exit)
        try:
            yield
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
            await app.state.store.close()

    routes: list[BaseRoute] = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *client_routes.ROUTES,
        *worker_routes.ROUTES,
    ]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.settings = settings
    app.state.store = store
    app.state.keys = keys
    # Wraps app.state.store to count transitions; adds /metrics, the dashboard at / and
    # their lifespan work. Both must run before the app starts.
    install_metrics(app)
    install_dashboard(app)
    return app


def _report_background_exit(task: asyncio.Task[None]) -> None:
    """The background task must run until shutdown; if it dies, say so loudly, once."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task stopped: sweeps and webhooks are halted", exc_info=exc)
