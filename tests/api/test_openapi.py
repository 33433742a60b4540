"""The served OpenAPI document is accurate: a bounded schemathesis run over every client route
finds no 5xx, no reply that breaks its documented schema, and no non-JSON content type."""

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
