"""The HTTP application: every route, the shared state, and the one lifespan, built in one place.

Shared state, which the routes and the background task rely on by these exact names:
`app.state.settings` (Settings), `app.state.store` (JobStore), `app.state.keys` (auth.Keys),
`app.state.metrics` (Metrics), `app.state.dashboard` (Dashboard), `app.state.server_stop`
(ServerStop: ends the worker long-polls at shutdown). The store's listeners are
subscribed here: metrics and the dashboard's activity learn of every committed change from the
store's events. The lifespan opens the store before the first request and runs
`run_background` (sweeps and webhook delivery) and the dashboard's history sampler as tasks for
as long as the server runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api import (
    client_routes,
    dashboard,
    docs_page,
    endpoint_routes,
    job_list,
    job_logs,
    metrics,
    openai_routes,
    worker_routes,
)
from neuroq.api.activity import Activity
from neuroq.api.auth import load_keys
from neuroq.api.background import run_background
from neuroq.api.errors import EXCEPTION_HANDLERS
from neuroq.api.metrics import HTTPMetricsMiddleware, Metrics
from neuroq.api.openapi import openapi_document
from neuroq.api.stopping import ServerStop
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
    counters = Metrics()
    activity = Activity()
    store.events.subscribe(counters.on_store_event)
    store.events.subscribe(activity.on_store_event)
    board = dashboard.create_dashboard(settings, store, counters, activity, keys)
    stop = ServerStop(store.notifier)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        stop.reset()
        await store.open()
        tasks = [
            asyncio.create_task(run_background(app), name="neuroq-background"),
            asyncio.create_task(board.history.run(store, counters), name="neuroq-history"),
        ]
        tasks[0].add_done_callback(_report_background_exit)
        if settings.scaler:
            from neuroq.scaler.local import run_in_server

            tasks.append(asyncio.create_task(run_in_server(app), name="neuroq-scaler"))
        try:
            yield
        finally:
            stop.begin()  # uvicorn's shutdown called it already (commands.py); others may not
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await store.close()

    routes: list[BaseRoute] = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page.docs, methods=["GET"]),
        *client_routes.ROUTES,
        *openai_routes.ROUTES,
        *job_list.ROUTES,
        *job_logs.ROUTES,
        *worker_routes.ROUTES,
        *endpoint_routes.ROUTES,
        *metrics.ROUTES,
        *dashboard.ROUTES,
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(HTTPMetricsMiddleware, metrics=counters)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.keys = keys
    app.state.metrics = counters
    app.state.dashboard = board
    app.state.server_stop = stop
    return app


def _report_background_exit(task: asyncio.Task[None]) -> None:
    """The background task must run until shutdown; if it dies, say so loudly, once."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("background task stopped: sweeps and webhooks are halted", exc_info=exc)
