"""The served OpenAPI document is complete and accurate: every client-facing route the app serves
is in it with its methods, and a bounded schemathesis run over it finds no 5xx, no reply that
breaks its documented schema, and no undocumented content type."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
from harness import start_server

HERE = Path(__file__).resolve().parent
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"

#: routes the app serves that the document leaves out on purpose, each with why. Anything else
#: the app serves must be in the document, with every method.
NOT_DOCUMENTED = {
    # The worker protocol (docs/worker-protocol.md): RunPod's SDK speaks it, not API clients.
    "/v2/{endpoint_id}/job-take/{worker_id}": "worker protocol",
    "/v2/{endpoint_id}/job-take-batch/{worker_id}": "worker protocol",
    "/v2/{endpoint_id}/job-done/{worker_id}/{job_id}": "worker protocol",
    "/v2/{endpoint_id}/job-done-batch/{worker_id}": "worker protocol",
    "/v2/{endpoint_id}/job-stream/{worker_id}/{job_id}": "worker protocol",
    "/v2/{endpoint_id}/job-log/{worker_id}/{job_id}": "worker protocol",
    "/v2/{endpoint_id}/job-stop/{worker_id}": "worker protocol",
    "/v2/{endpoint_id}/ping/{worker_id}": "worker protocol",
    # The dashboard: HTML pages for a browser with a session cookie (its /ui/ calls below).
    "/": "dashboard page",
    "/login": "dashboard page",
    "/logout": "dashboard page",
    "/jobs": "dashboard page",
    "/jobs/{endpoint_id}/{job_id}": "dashboard page",
    "/playground": "dashboard page",
    # The document itself and its rendering: they describe the API rather than belong to it.
    "/openapi.json": "the document",
    "/docs": "the document, as HTML",
}
#: every path under this prefix is the dashboard's own calls (session cookie, CSRF token)
DASHBOARD_CALLS = "/ui/"


def test_document_is_valid_openapi_3_1() -> None:
    from neuroq.api.openapi import openapi_document

    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    for schema in document["components"]["schemas"].values():
        jsonschema_rs.meta.validate({"$schema": DRAFT_2020_12, **schema})
    refs = json.dumps(document).count('"$ref": "#/components/schemas/')
    assert refs > 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "200" in operation["responses"], (method, path)
            assert "default" in operation["responses"], (method, path)


def test_every_client_route_is_documented_with_its_methods(tmp_path: Path) -> None:
    from starlette.routing import Route

    from neuroq.api.app import create_app
    from neuroq.api.openapi import openapi_document
    from neuroq.config import Settings

    app = create_app(Settings.from_env(data_dir=tmp_path))
    paths = openapi_document()["paths"]
    served: dict[str, set[str]] = {}
    for route in app.routes:
        assert isinstance(route, Route), route  # a Mount would need its routes walked
        served.setdefault(route.path, set()).update(route.methods or ())
    missing = []
    for path, methods in sorted(served.items()):
        if path in NOT_DOCUMENTED or path.startswith(DASHBOARD_CALLS):
            continue
        documented = {method.upper() for method in paths.get(path, {})}
        missing += [f"{m} {path}" for m in sorted(methods - {"HEAD"} - documented)]
    assert not missing, f"served but not in /openapi.json: {missing}"
    # The list of exceptions names only routes that exist, and the document no phantom route.
    assert set(NOT_DOCUMENTED) <= set(served), set(NOT_DOCUMENTED) - set(served)
    assert set(paths) <= set(served), set(paths) - set(served)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_schemathesis_finds_no_server_error_or_schema_violation(tmp_path: Path) -> None:
    handler = tmp_path / "echo.py"
    handler.write_text("async def handler(job):\n    return job['input']\n")
    server = start_server(
        tmp_path / "srv",
        "--worker",
        f"{handler}:handler",
        "--endpoint",
        "fuzz",
        "--concurrency",
        "4",
        NEUROQ_RUNSYNC_DEFAULT_WAIT_MS="1000",
        NEUROQ_STATUS_MAX_WAIT_MS="1000",
    )
    try:
        assert httpx.get(f"{server.url}/openapi.json").status_code == 200
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        }
        cmd = [
            str(Path(sys.executable).with_name("schemathesis")),
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,content_type_conformance",
            "--max-examples",
            "5",
            # One worker: schemathesis's generator is not thread-safe on Python 3.11 (ast.parse).
            "--workers",
            "1",
            "--request-timeout",
            "15",
            "--seed",
            "20240601",
            "--no-shrink",
            # The OpenAI routes: the echo worker answers with its input, not OpenAI's forms, so
            # every reply would be a 502 (documented, but nothing learned from it).
            "--exclude-operation-id",
            "chatCompletions",
            "--exclude-operation-id",
            "completions",
            "--exclude-operation-id",
            "listModels",
            # Writing endpoint settings: a fuzzed handler or command with workersMin > 0 makes
            # the server's scaler start worker processes that run whatever was generated.
            "--exclude-operation-id",
            "putEndpoint",
            "--exclude-operation-id",
            "patchEndpoint",
            "--header",
            f"Authorization: Bearer {server.api_key}",
        ]
        result = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        report = result.stdout[-6000:] + result.stderr[-2000:]
        assert result.returncode == 0, report
        assert "passed" in result.stdout, report
        assert "Traceback" not in server.log(), server.log()[-4000:]
    finally:
        server.stop()
