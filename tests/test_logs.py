"""configure_logging: one line per event, JSON or text, context fields, and keys never logged."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import start_server

from neuroq import logs
from neuroq.config import Settings

KEY = "sk-very-secret-client-key"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging rewires the root logger; put pytest's handlers back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    secrets = set(logs._secrets)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logs._secrets.clear()
    logs._secrets.update(secrets)


def configure(**settings: object) -> io.StringIO:
    stream = io.StringIO()
    logs.configure_logging(Settings(**settings), stream=stream)  # type: ignore[arg-type]
    return stream


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_carry_the_fields_and_context() -> None:
    out = configure(log_format="json")
    log = logging.getLogger("neuroq.test")
    log.info("job %s finished", "j-1", extra={"job_id": "j-1", "endpoint_id": "ep"})
    log.debug("not shown at INFO")
    (line,) = lines(out)
    record = json.loads(line)
    assert record["level"] == "INFO"
    assert record["logger"] == "neuroq.test"
    assert record["msg"] == "job j-1 finished"
    assert record["job_id"] == "j-1" and record["endpoint_id"] == "ep"
    assert "worker_id" not in record
    assert record["ts"].endswith("Z") and "T" in record["ts"]


def test_a_traceback_stays_inside_one_json_line() -> None:
    out = configure(log_format="json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("neuroq.test").exception("it failed", extra={"worker_id": "w-1"})
    (line,) = lines(out)
    record = json.loads(line)
    assert record["worker_id"] == "w-1"
    assert "RuntimeError: boom" in record["exc"]


def test_text_lines_append_the_context() -> None:
    out = configure(log_format="text", log_level="DEBUG")
    logging.getLogger("neuroq.x").debug("hello", extra={"job_id": "j-2"})
    (line,) = lines(out)
    assert line.endswith(" DEBUG neuroq.x: hello job_id=j-2")


def test_configured_keys_are_redacted_everywhere() -> None:
    out = configure(log_format="json", api_keys=(KEY,), worker_keys=("worker-secret-1",))
    log = logging.getLogger("neuroq.test")
    log.warning("header was Bearer %s", KEY)
    log.warning(f"url http://h/?k={KEY}&w=worker-secret-1")
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        log.exception("failed")
    text = out.getvalue()
    assert KEY not in text and "worker-secret-1" not in text
    records = [json.loads(line) for line in lines(out)]
    assert records[0]["msg"] == "header was Bearer [REDACTED]"
    assert "[REDACTED]&w=[REDACTED]" in records[1]["msg"]
    assert "ValueError: bad key [REDACTED]" in records[2]["exc"]


def test_reconfiguring_does_not_double_lines() -> None:
    configure(log_format="text")
    out = configure(log_format="text")
    logging.getLogger("neuroq.test").info("once")
    assert len(lines(out)) == 1


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"log_format": "xml"}, "NEUROQ_LOG_FORMAT"), ({"log_level": "LOUD"}, "NEUROQ_LOG_LEVEL")],
)
def test_bad_settings_name_the_variable(settings: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        configure(**settings)


def test_serve_writes_json_lines_without_keys(tmp_path: Path) -> None:
    server = start_server(tmp_path / "srv", NEUROQ_LOG_FORMAT="json")
    try:
        headers = {"Authorization": f"Bearer {server.api_key}"}
        job = httpx.post(
            f"{server.base_url}/logs/run",
            json={"input": {"secret": "payload-xyz"}},
            headers=headers,
        ).json()
        httpx.post(f"{server.base_url}/logs/cancel/{job['id']}", headers=headers)
        bad = {"Authorization": "Bearer wrong-key-in-log?"}
        assert httpx.get(f"{server.base_url}/logs/health", headers=bad).status_code == 401
    finally:
        server.stop()
    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert any(r["logger"].startswith("uvicorn") for r in records)
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    text = server.log()
    assert server.api_key not in text and server.worker_key not in text
    assert "payload-xyz" not in text


def test_worker_rejects_an_unknown_log_format(tmp_path: Path) -> None:
    env = {"NEUROQ_LOG_FORMAT": "yaml", "NEUROQ_WORKER_KEY": "k" * 10, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "neuroq", "worker", "neuroq.demo_handlers:echo"]
    result = subprocess.run(
        [*command, "--endpoint", "x", "--url", "http://127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "NEUROQ_LOG_FORMAT='yaml'" in result.stderr
