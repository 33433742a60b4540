"""deploy/ checked without Docker or Kubernetes (neither runs here): every YAML file parses,
every `neuroq` command line in it and in the Dockerfiles names a real subcommand and real
flags, every NEUROQ_* variable is one the code reads, and the KEDA ScaledObject reads a field
the metrics route really serves, with scale to zero."""

from __future__ import annotations

import re
import shlex
from dataclasses import fields
from typing import Any

import click
import yaml
from harness import REPO

from neuroq.cli import COMMANDS, main
from neuroq.config import Settings
from neuroq.endpoints import EndpointConfig
from neuroq.scaler.source import endpoint_report
from neuroq.store.base import QueueStats

DEPLOY = REPO / "deploy"
YAML_FILES = sorted([*DEPLOY.glob("*.yml"), *DEPLOY.glob("k8s/*.yaml")])
DOCKERFILES = sorted(DEPLOY.glob("Dockerfile.*"))
#: variables the CLI reads besides Settings' NEUROQ_<FIELD>, the worker image's own two, and
#: NEUROQ_API_KEY, which docker-compose.yml takes from the shell that runs it
OTHER_VARS = {"NEUROQ_URL", "NEUROQ_WORKER_KEY", "NEUROQ_API_KEY", "NEUROQ_HANDLER",
              "NEUROQ_ENDPOINT"}  # fmt: skip


def _documents() -> list[Any]:
    return [doc for path in YAML_FILES for doc in yaml.safe_load_all(path.read_text()) if doc]


def _walk(value: Any) -> list[Any]:
    found = [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            found += _walk(item)
    return found


def _command_lines() -> list[list[str]]:
    docs = _documents()
    lines = [v for d in docs for v in _walk(d) if isinstance(v, list) and v[:1] == ["neuroq"]]
    for path in DOCKERFILES:
        for cmd in re.findall(r"^CMD (\[.*\])$", path.read_text(), re.M):
            argv = yaml.safe_load(cmd)
            if argv[:2] == ["sh", "-c"]:  # the shell form: `exec neuroq ...`
                argv = shlex.split(argv[2].removeprefix("exec "))
            lines.append(argv)
    return lines


def test_every_yaml_file_parses() -> None:
    assert len(YAML_FILES) >= 4
    kinds = {doc.get("kind") for doc in _documents()}
    assert {"Deployment", "ScaledObject", "StatefulSet", "Service"} <= kinds


def test_neuroq_command_lines_use_real_subcommands_and_flags() -> None:
    lines = _command_lines()
    assert {line[1] for line in lines} >= {"serve", "worker"}, lines
    for line in lines:
        assert line[1] in COMMANDS, line
        command = main.get_command(click.Context(main), line[1])
        assert command is not None
        flags = {opt for p in command.params for opt in p.opts + p.secondary_opts}
        for word in line[2:]:
            if word.startswith("--"):
                assert word in flags, f"{word} is not a flag of neuroq {line[1]}"


def test_every_neuroq_variable_is_read_by_the_code() -> None:
    known = {f"NEUROQ_{f.name.upper()}" for f in fields(Settings)} | OTHER_VARS
    text = "\n".join(p.read_text() for p in [*YAML_FILES, *DOCKERFILES])
    used = set(re.findall(r"\bNEUROQ_[A-Z_]+\b", text))
    assert used and used <= known, used - known


def test_keda_scaled_object_reads_the_metrics_route() -> None:
    (scaled,) = [doc for doc in _documents() if doc.get("kind") == "ScaledObject"]
    assert scaled["spec"]["minReplicaCount"] == 0  # scale to zero
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "metrics-api"
    meta = trigger["metadata"]
    assert re.fullmatch(r"http://[^/]+/endpoints/[A-Za-z0-9_-]+/metrics", meta["url"])
    float(meta["targetValue"])
    report = endpoint_report("ep", EndpointConfig("ep"), QueueStats(), [], 0)
    value = report[meta["valueLocation"]]  # a top-level GJSON path into the route's JSON
    assert isinstance(value, int) and not isinstance(value, bool)
