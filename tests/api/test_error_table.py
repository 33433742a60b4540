"""The exception table in neuroq.api.errors, in process: a crash becomes a bare JSON 500 that
leaks nothing, and store-level refusals become 400s."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from neuroq.api.errors import EXCEPTION_HANDLERS
from neuroq.jobs import Job, JobStatus, Policy
from neuroq.store.base import InvalidTransition


async def crash(request: Request) -> Response:
    raise RuntimeError("secret detail /etc/passwd")


async def refuse(request: Request) -> Response:
    job = Job("j1", "ep", JobStatus.COMPLETED, "{}", Policy(), created_at_ms=0)
    raise InvalidTransition(job, "retry")


def make_client() -> TestClient:
    app = Starlette(
        routes=[Route("/crash", crash), Route("/refuse", refuse, methods=["POST"])],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    return TestClient(app, raise_server_exceptions=False)


def test_unhandled_error_is_500_json_without_details() -> None:
    reply = make_client().get("/crash")
    assert reply.status_code == 500
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"error": "internal error"}
    assert "secret" not in reply.text


def test_invalid_transition_is_400_naming_the_state() -> None:
    reply = make_client().post("/refuse")
    assert reply.status_code == 400
    assert reply.json() == {"error": "cannot retry a job in state COMPLETED"}


def test_router_404_and_405_are_json() -> None:
    client = make_client()
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json() == {"error": "no route GET /nowhere"}
    wrong = client.get("/refuse")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert "use POST" in wrong.json()["error"]
