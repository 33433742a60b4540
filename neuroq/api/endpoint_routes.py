"""Endpoint settings and the scaler's view of each endpoint, under `/endpoints`.

Kept apart from RunPod's `/v2/{endpoint_id}/...` namespace, which belongs to jobs: an endpoint
named like a route could otherwise shadow one. Every route needs the client key, except
registering a starting worker, which is what a (remote) scaler does with the worker key.

    GET    /endpoints                      {"endpoints": [settings...]}
    GET    /endpoints/{ep}                 settings, or 404 when the endpoint is not configured
    PUT    /endpoints/{ep}                 create (201) or replace (200); missing keys = defaults
    PATCH  /endpoints/{ep}                 change the given keys of a configured endpoint
    DELETE /endpoints/{ep}                 forget the settings; the jobs stay (a plain queue)
    GET    /endpoints/{ep}/metrics         the scaler's inputs and decision (KEDA metrics-api)
    GET    /endpoints/{ep}/workers         live workers: id, state, jobs, lastSeen
    POST   /endpoints/{ep}/workers/{id}    worker key: show a starting worker as initializing

A bad setting is `400 {"error": "workersMax: must be ...", "field": "workersMax"}`. A change
wakes this server's scaler at once (`SETTINGS_TOPIC`), so a new spare or a raised workersMin
does not wait for its next look.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from neuroq.api.schemas import parse_json_object, read_body_limited
from neuroq.endpoints import EndpointConfig, EndpointError
from neuroq.jobs import is_path_safe, now_ms
from neuroq.scaler.source import SETTINGS_TOPIC, endpoint_report
from neuroq.store.base import JobStore, QueueStats

#: settings are small; anything bigger is a mistake
MAX_SETTINGS_BODY_BYTES = 64 * 1024
_UNSAFE_ID = "endpoint ids are 1-128 characters of A-Z a-z 0-9 _ -"


def _store(request: Request) -> JobStore:
    store: JobStore = request.app.state.store
    return store


def _authorise(request: Request, *, worker: bool = False) -> None:
    keys = request.app.state.keys
    header = request.headers.get("authorization")
    if worker and not keys.check_worker(header):
        raise HTTPException(401, "missing or invalid worker key")
    if not worker and not keys.check_client(header):
        raise HTTPException(
            401,
            "missing or invalid API key: send 'Authorization: Bearer <key>' or the bare key",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _endpoint_id(request: Request) -> str:
    endpoint_id: str = request.path_params["endpoint_id"]
    if not is_path_safe(endpoint_id):
        raise HTTPException(404, f"unknown endpoint: {_UNSAFE_ID}")
    return endpoint_id


def _invalid(exc: EndpointError) -> Response:
    return JSONResponse({"error": str(exc), "field": exc.field}, status_code=400)


async def _settings_body(request: Request) -> dict[str, Any]:
    return parse_json_object(await read_body_limited(request, MAX_SETTINGS_BODY_BYTES))


def _settings_changed(request: Request) -> None:
    _store(request).notifier.publish(SETTINGS_TOPIC)


def _not_configured(endpoint_id: str) -> HTTPException:
    return HTTPException(404, f"endpoint {endpoint_id} is not configured (it is a plain queue)")


async def list_endpoints(request: Request) -> Response:
    _authorise(request)
    configs = await _store(request).list_endpoints()
    return JSONResponse({"endpoints": [c.to_wire() for c in configs]})


async def get_endpoint(request: Request) -> Response:
    _authorise(request)
    endpoint_id = _endpoint_id(request)
    config = await _store(request).get_endpoint(endpoint_id)
    if config is None:
        raise _not_configured(endpoint_id)
    return JSONResponse(config.to_wire())


async def put_endpoint(request: Request) -> Response:
    _authorise(request)
    endpoint_id = _endpoint_id(request)
    body = await _settings_body(request)
    store = _store(request)
    try:
        config = EndpointConfig.from_wire(endpoint_id, body)
    except EndpointError as exc:
        return _invalid(exc)
    existed = await store.get_endpoint(endpoint_id) is not None
    stored = await store.put_endpoint(config, now_ms())
    _settings_changed(request)
    return JSONResponse(stored.to_wire(), status_code=200 if existed else 201)


async def patch_endpoint(request: Request) -> Response:
    _authorise(request)
    endpoint_id = _endpoint_id(request)
    body = await _settings_body(request)
    store = _store(request)
    config = await store.get_endpoint(endpoint_id)
    if config is None:
        raise _not_configured(endpoint_id)
    try:
        changed = config.updated(body)
    except EndpointError as exc:
        return _invalid(exc)
    stored = await store.put_endpoint(changed, now_ms())
    _settings_changed(request)
    return JSONResponse(stored.to_wire())


async def delete_endpoint(request: Request) -> Response:
    _authorise(request)
    endpoint_id = _endpoint_id(request)
    if not await _store(request).delete_endpoint(endpoint_id):
        raise _not_configured(endpoint_id)
    _settings_changed(request)
    return JSONResponse({"deleted": endpoint_id})


async def endpoint_metrics(request: Request) -> Response:
    if not request.app.state.settings.metrics_public:
        _authorise(request)
    endpoint_id = _endpoint_id(request)
    store = _store(request)
    config = await store.get_endpoint(endpoint_id)
    stats = (await store.queue_stats()).get(endpoint_id, QueueStats())
    workers = [w for w in await store.list_workers() if w.endpoint_id == endpoint_id]
    return JSONResponse(endpoint_report(endpoint_id, config, stats, workers, now_ms()))


async def endpoint_workers(request: Request) -> Response:
    _authorise(request)
    endpoint_id = _endpoint_id(request)
    workers = [w for w in await _store(request).list_workers() if w.endpoint_id == endpoint_id]
    return JSONResponse(
        {
            "workers": [
                {
                    "id": w.worker_id,
                    "state": w.state,
                    "jobs": list(w.held_job_ids),
                    "lastSeen": w.last_seen_ms,
                }
                for w in workers
            ]
        }
    )


async def register_worker(request: Request) -> Response:
    _authorise(request, worker=True)
    endpoint_id = _endpoint_id(request)
    worker_id: str = request.path_params["worker_id"]
    if not is_path_safe(worker_id):
        raise HTTPException(400, "worker ids are 1-128 characters of A-Z a-z 0-9 _ -")
    await _store(request).touch_worker(endpoint_id, worker_id, now_ms(), state="initializing")
    return JSONResponse({"id": worker_id, "state": "initializing"})


_EP = "/endpoints/{endpoint_id}"

ROUTES: list[BaseRoute] = [
    Route("/endpoints", list_endpoints, methods=["GET"]),
    Route(_EP, get_endpoint, methods=["GET"]),
    Route(_EP, put_endpoint, methods=["PUT"]),
    Route(_EP, patch_endpoint, methods=["PATCH"]),
    Route(_EP, delete_endpoint, methods=["DELETE"]),
    Route(f"{_EP}/metrics", endpoint_metrics, methods=["GET"]),
    Route(f"{_EP}/workers", endpoint_workers, methods=["GET"]),
    Route(f"{_EP}/workers/{{worker_id}}", register_worker, methods=["POST"]),
]
