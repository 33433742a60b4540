"""Endpoint settings over HTTP and the CLI: create, read, patch, list, delete under
`/endpoints`, errors naming the field, the client key required; an endpoint's executionTimeout
as the default of its jobs; `neuroq endpoint` commands, finding the server and key as `neuroq
send` does (flags, environment, the data directory's key file), with help for every option and
examples; an unmodified RunPod SDK worker started
by the scaler as the endpoint's external command; the metrics JSON in the shape KEDA's
metrics-api scaler reads, and the Prometheus gauges beside it; `inputSchema` (checked by name,
stored, set by `--input-schema`, absent from older rows); `neuroq scaler --url` skipping the
settings of a newer server that it does not know."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import pytest
from fleet import SERVER_ENV, client, configure, new_endpoint, wait_for, worker_leaders
from harness import REPO, ServerProcess, start_server

SDK_WORKER = REPO / "tests" / "compat" / "workers" / "sync_worker.py"
#: what `neuroq.client.connection` reads: left out of the CLI runs' environment
CONNECTION_VARS = ("NEUROQ_API_URL", "NEUROQ_URL", "RUNPOD_API_KEY", "NEUROQ_DATA_DIR",
                   "NEUROQ_WORKER_KEY")  # fmt: skip


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("endpoints"), **SERVER_ENV)
    yield proc
    proc.stop()


def _call(server: ServerProcess, method: str, path: str, **kwargs: object) -> httpx.Response:
    return httpx.request(
        method, f"{server.url}{path}", headers=server.client_headers, timeout=10, **kwargs
    )  # type: ignore[arg-type]


def test_settings_round_trip(api_server: ServerProcess) -> None:
    ep = new_endpoint("cfg")
    assert _call(api_server, "GET", f"/endpoints/{ep}").status_code == 404
    created = _call(api_server, "PUT", f"/endpoints/{ep}", json={"workersMax": 2})
    assert created.status_code == 201 and created.json()["workersMax"] == 2
    assert created.json()["idleTimeout"] == 5  # the default
    patched = _call(api_server, "PATCH", f"/endpoints/{ep}", json={"idleTimeout": 9})
    assert patched.json()["idleTimeout"] == 9 and patched.json()["workersMax"] == 2
    replaced = _call(api_server, "PUT", f"/endpoints/{ep}", json={"scalerType": "REQUEST_COUNT"})
    assert replaced.status_code == 200 and replaced.json()["idleTimeout"] == 5
    listed = _call(api_server, "GET", "/endpoints").json()["endpoints"]
    assert ep in [item["name"] for item in listed]
    assert _call(api_server, "DELETE", f"/endpoints/{ep}").json() == {"deleted": ep}
    assert _call(api_server, "DELETE", f"/endpoints/{ep}").status_code == 404
    assert _call(api_server, "PATCH", f"/endpoints/{ep}", json={}).status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"workersMax": -1}, "workersMax"),
        ({"workersMin": 3, "workersMax": 2}, "workersMin"),
        ({"workersSpare": -1}, "workersSpare"),
        ({"workersSpare": 4, "workersMax": 3}, "workersSpare"),
        ({"scalerType": "CPU"}, "scalerType"),
        ({"handler": "no-colon"}, "handler"),
        ({"command": "python w.py"}, "command"),
        ({"executionTimeout": 1}, "executionTimeout"),
        ({"env": {"1X": "y"}}, "env.1X"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_settings_are_400_naming_the_field(
    api_server: ServerProcess, body: dict[str, object], field: str
) -> None:
    reply = _call(api_server, "PUT", f"/endpoints/{new_endpoint('bad')}", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field and reply.json()["error"].startswith(f"{field}: ")


def test_routes_need_the_client_key(api_server: ServerProcess) -> None:
    for method, path in [("GET", "/endpoints"), ("PUT", "/endpoints/x"), ("GET", "/endpoints/x")]:
        reply = httpx.request(method, f"{api_server.url}{path}", json={}, timeout=10)
        assert reply.status_code == 401, (method, path)
    worker = httpx.get(f"{api_server.url}/endpoints", headers=api_server.worker_headers)
    assert worker.status_code == 401


def test_endpoint_execution_timeout_is_the_jobs_default(api_server: ServerProcess) -> None:
    ep = new_endpoint("timeout")
    configure(api_server, ep, executionTimeout=5_000)  # no handler: a plain queue with a default
    with client(api_server) as http:
        implicit = http.post(f"/{ep}/run", json={"input": 1}).json()["id"]
        explicit = http.post(
            f"/{ep}/run", json={"input": 2, "policy": {"executionTimeout": 60_000}}
        ).json()["id"]
        take = httpx.get(
            f"{api_server.base_url}/{ep}/job-take-batch/w-timeout?batch_size=2",
            headers=api_server.worker_headers,
            timeout=30,
        ).json()
        timeouts = {job["id"]: job["policy"]["executionTimeout"] for job in take}
        assert timeouts == {implicit: 5_000, explicit: 60_000}


def _neuroq(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m neuroq ARGS` with none of the caller's connection settings, plus `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in CONNECTION_VARS}
    return subprocess.run(
        [sys.executable, "-m", "neuroq", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**clean, **env},
    )


def test_endpoint_cli(api_server: ServerProcess) -> None:
    ep = new_endpoint("cli")
    auth = ["--url", api_server.url, "--key", api_server.api_key]

    def run(*args: str) -> object:
        out = _neuroq("endpoint", *args, *auth)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    created = run("create", ep, "--handler", "m:f", "--workers-max", "0", "--env", "A=b")
    assert created == {**created, "handler": "m:f", "workersMax": 0, "env": {"A": "b"}}
    updated = run("update", ep, "--idle-timeout", "7")
    assert updated == {**created, "idleTimeout": 7, "updatedAt": updated["updatedAt"]}  # type: ignore[index]
    assert ep in [item["name"] for item in run("list")]  # type: ignore[attr-defined]
    bad = _neuroq("endpoint", "update", ep, "--workers-min", "9", *auth)
    assert bad.returncode != 0 and "workersMin: 9 is more than workersMax 0" in bad.stderr
    spare = _neuroq("endpoint", "update", ep, "--workers-spare", "1", *auth)
    assert spare.returncode != 0 and "workersSpare: 1 is more than workersMax 0" in spare.stderr
    assert run("update", ep, "--workers-max", "2", "--workers-spare", "1")["workersSpare"] == 1  # type: ignore[index]
    assert run("delete", ep) == {"deleted": ep}


def test_endpoint_cli_finds_server_and_key_as_send_does(
    api_server: ServerProcess, tmp_path: Path
) -> None:
    ep = new_endpoint("conn")
    configure(api_server, ep, workersMax=1)
    # the environment: $NEUROQ_API_URL (a trailing /v2 accepted) and $RUNPOD_API_KEY
    by_env = _neuroq(
        "endpoint", "list", cwd=tmp_path,
        NEUROQ_API_URL=f"{api_server.url}/v2", RUNPOD_API_KEY=api_server.api_key,
    )  # fmt: skip
    assert by_env.returncode == 0, by_env.stderr
    assert ep in [item["name"] for item in json.loads(by_env.stdout)]
    # a server on this machine: the data directory's api_key file ($NEUROQ_URL, the older name)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "api_key").write_text(api_server.api_key + "\n")
    by_file = _neuroq(
        "endpoint", "delete", ep, "--data-dir", str(data_dir), cwd=tmp_path,
        NEUROQ_URL=api_server.url,
    )  # fmt: skip
    assert by_file.returncode == 0, by_file.stderr
    assert json.loads(by_file.stdout) == {"deleted": ep}
    # no key anywhere: a usage error naming where keys come from, before any request
    empty = tmp_path / "empty"
    none = _neuroq("endpoint", "list", "--url", api_server.url, "--data-dir", str(empty))
    assert none.returncode == 2 and "give --key or set $RUNPOD_API_KEY" in none.stderr
    assert not empty.exists()  # a client never generates a key


@pytest.mark.parametrize("command", ["create", "update", "list", "delete", "scaler"])
def test_endpoint_and_scaler_help(command: str) -> None:
    from neuroq.cli import main

    args = ["scaler"] if command == "scaler" else ["endpoint", command]
    out = _neuroq(*args, "--help")
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "Examples: neuroq " in text
    assert "[default: $NEUROQ_API_URL, $NEUROQ_URL or http://127.0.0.1:8000]" in text
    assert "[default: $RUNPOD_API_KEY, or for a server on this machine" in text
    assert "[default: $NEUROQ_DATA_DIR or .neuroq]" in text
    group = main.get_command(click.Context(main), args[0])
    assert group is not None
    cmd = group if command == "scaler" else group.get_command(click.Context(group), command)  # type: ignore[attr-defined]
    undocumented = [p.name for p in cmd.params if isinstance(p, click.Option) and not p.help]
    assert undocumented == []


def test_unmodified_runpod_sdk_worker_as_the_endpoint_command(
    api_server: ServerProcess, tmp_path: Path
) -> None:
    ep = new_endpoint("sdk")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "COMPAT_EVENTS": str(tmp_path / "events.jsonl")}
    configure(
        api_server, ep, command=[sys.executable, str(SDK_WORKER)], env=env,
        workersMax=1, idleTimeout=1,
    )  # fmt: skip
    with client(api_server) as http:
        reply = http.post(f"/{ep}/runsync", json={"input": {"seconds": 0, "value": 7}}).json()
    assert reply["status"] == "COMPLETED", reply
    assert reply["output"] == {"slept": 0, "value": 7}
    assert reply["workerId"].startswith(f"{ep}-")
    wait_for(
        lambda: worker_leaders(api_server, ep), 30, "SDK worker stopped", until=lambda w: not w
    )


def test_metrics_json_has_the_shape_keda_reads(api_server: ServerProcess) -> None:
    ep = new_endpoint("keda")
    configure(api_server, ep, workersMax=5, scalerType="REQUEST_COUNT", scalerValue=2)
    with client(api_server) as http:
        for n in range(3):
            http.post(f"/{ep}/run", json={"input": n})
    report = _call(api_server, "GET", f"/endpoints/{ep}/metrics").json()
    # KEDA metrics-api: valueLocation is a GJSON path into this object; the value a number
    assert report["desiredWorkers"] == 2 and report["queued"] == 3 and report["jobs"] == 3
    for key in ("queued", "running", "jobs", "oldestQueueDelaySeconds", "workers",
                "desiredWorkers"):  # fmt: skip
        assert isinstance(report[key], int | float) and not isinstance(report[key], bool), key
    assert report["oldestQueueDelaySeconds"] >= 0
    scrape = _call(api_server, "GET", "/metrics").text
    assert f'neuroq_endpoint_desired_workers{{endpoint="{ep}"}} 2.0' in scrape
    assert f'neuroq_endpoint_queued_jobs{{endpoint="{ep}"}} 3.0' in scrape
    assert f'neuroq_endpoint_oldest_queue_delay_seconds{{endpoint="{ep}"}}' in scrape


SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {"type": "string", "description": "<b>what to answer</b>"},
        "n": {"type": "integer", "default": 2, "minimum": 1, "maximum": 9},
        "tone": {"type": "string", "enum": ["plain", "formal"]},
    },
    "required": ["prompt"],
    "x-ignored": {"kept": True},
}


def test_input_schema_round_trip(api_server: ServerProcess) -> None:
    ep = new_endpoint("schema")
    assert configure(api_server, ep, workersMax=1)["inputSchema"] is None
    patched = _call(api_server, "PATCH", f"/endpoints/{ep}", json={"inputSchema": SCHEMA})
    assert patched.status_code == 200 and patched.json()["inputSchema"] == SCHEMA
    assert _call(api_server, "GET", f"/endpoints/{ep}").json()["inputSchema"] == SCHEMA
    listed = _call(api_server, "GET", "/endpoints").json()["endpoints"]
    assert [item["inputSchema"] for item in listed if item["name"] == ep] == [SCHEMA]
    # another setting changed keeps the schema; null removes it
    kept = _call(api_server, "PATCH", f"/endpoints/{ep}", json={"idleTimeout": 3}).json()
    assert kept["inputSchema"] == SCHEMA
    cleared = _call(api_server, "PATCH", f"/endpoints/{ep}", json={"inputSchema": None})
    assert cleared.json()["inputSchema"] is None


def _property(**prop: object) -> dict[str, object]:
    return {"properties": {"p": prop}}


@pytest.mark.parametrize(
    ("schema", "field"),
    [
        ([], "inputSchema"),
        ({"type": "array"}, "inputSchema.type"),
        ({"properties": []}, "inputSchema.properties"),
        (
            {"properties": {f"p{i}": {"type": "string"} for i in range(201)}},
            "inputSchema.properties",
        ),
        ({"properties": {"p": {"type": "string", "description": "x" * 40_000}}}, "inputSchema"),
        (_property(), "inputSchema.properties.p.type"),
        (_property(type="text"), "inputSchema.properties.p.type"),
        (_property(type="string", enum=[]), "inputSchema.properties.p.enum"),
        (_property(type="integer", enum=[1, "2"]), "inputSchema.properties.p.enum"),
        (_property(type="integer", default=1.5), "inputSchema.properties.p.default"),
        (_property(type="integer", default=10, maximum=9), "inputSchema.properties.p.default"),
        (_property(type="string", enum=["a"], default="b"), "inputSchema.properties.p.default"),
        (_property(type="string", minimum=1), "inputSchema.properties.p.minimum"),
        (_property(type="number", minimum=2, maximum=1), "inputSchema.properties.p.minimum"),
        (_property(type="string", maxLength=-1), "inputSchema.properties.p.maxLength"),
        (_property(type="string", description=7), "inputSchema.properties.p.description"),
        ({**_property(type="string"), "required": ["q"]}, "inputSchema.required"),
        ({**_property(type="string"), "required": ["p", "p"]}, "inputSchema.required"),
    ],
)
def test_bad_input_schemas_are_400_naming_the_place(
    api_server: ServerProcess, schema: object, field: str
) -> None:
    reply = _call(
        api_server, "PUT", f"/endpoints/{new_endpoint('bad')}", json={"inputSchema": schema}
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["field"] == field and reply.json()["error"].startswith(f"{field}: ")


def test_endpoint_cli_input_schema(api_server: ServerProcess, tmp_path: Path) -> None:
    ep = new_endpoint("cli-schema")
    auth = ["--url", api_server.url, "--key", api_server.api_key]
    shipped = REPO / "neuroq" / "handler" / "input_schema.json"
    out = _neuroq("endpoint", "create", ep, "--input-schema", str(shipped), *auth)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["inputSchema"] == json.loads(shipped.read_text())
    inline = _neuroq("endpoint", "update", ep, "--input-schema", json.dumps(SCHEMA), *auth)
    assert inline.returncode == 0 and json.loads(inline.stdout)["inputSchema"] == SCHEMA
    bad = tmp_path / "bad.json"
    bad.write_text('{"properties": {"p": {"type": "str"}}}')
    refused = _neuroq("endpoint", "update", ep, "--input-schema", str(bad), *auth)
    assert refused.returncode == 1
    assert "400: inputSchema.properties.p.type: must be one of" in refused.stderr
    missing = _neuroq("endpoint", "update", ep, "--input-schema", str(tmp_path / "no.json"), *auth)
    assert missing.returncode == 2 and "--input-schema" in missing.stderr
    cleared = _neuroq("endpoint", "update", ep, "--input-schema", "null", *auth)
    assert cleared.returncode == 0 and json.loads(cleared.stdout)["inputSchema"] is None


async def test_settings_stored_without_an_input_schema_read_back_as_none(tmp_path: Path) -> None:
    """A row written before the setting existed has no inputSchema key in its config_json."""
    import sqlite3

    from neuroq.endpoints import EndpointConfig
    from neuroq.store.sqlite import SQLiteStore

    path = tmp_path / "old.db"
    store = SQLiteStore(path)
    await store.open()
    try:
        await store.put_endpoint(EndpointConfig("old", workers_max=2), 1)
        with sqlite3.connect(path) as db:
            (stored,) = db.execute("SELECT config_json FROM endpoints").fetchone()
            settings = json.loads(stored)
            assert "inputSchema" in settings
            del settings["inputSchema"]
            db.execute("UPDATE endpoints SET config_json = ?", (json.dumps(settings),))
        found = await store.get_endpoint("old")
        assert found is not None and found.input_schema is None and found.workers_max == 2
    finally:
        await store.close()


def test_remote_scaler_ignores_settings_it_does_not_know(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`neuroq scaler --url` reads /endpoints of a server that may be newer than itself: a
    setting it does not know is skipped (logged once at debug), the rest still apply."""
    import asyncio
    import logging
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from neuroq.endpoints import EndpointConfig
    from neuroq.scaler.source import HTTPSource

    wire = EndpointConfig("newer", handler="m:f", workers_max=4).to_wire()
    answers = {
        "/endpoints": {"endpoints": [{**wire, "gpuType": "H200", "regions": ["eu"]}]},
        "/endpoints/newer/metrics": {"queued": 2, "running": 0, "oldestQueuedAt": 1},
        "/endpoints/newer/workers": {"workers": []},
    }

    class Newer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)  # HTTP/1.0: the body ends where the connection does
            self.end_headers()
            self.wfile.write(json.dumps(answers[self.path]).encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Newer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    async def look_twice() -> list[EndpointConfig]:
        source = HTTPSource(f"http://127.0.0.1:{server.server_address[1]}", "ck", "wk")
        try:
            await source.observe()
            return (await source.observe()).configs
        finally:
            await source.aclose()

    try:
        with caplog.at_level(logging.DEBUG, logger="neuroq.scaler.source"):
            (config,) = asyncio.run(look_twice())
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert config.endpoint_id == "newer" and config.workers_max == 4 and config.handler == "m:f"
    ignored = [
        r.getMessage() for r in caplog.records if "ignoring endpoint setting" in r.getMessage()
    ]
    assert ignored == [
        "ignoring endpoint setting 'gpuType', unknown to this version",
        "ignoring endpoint setting 'regions', unknown to this version",
    ]
