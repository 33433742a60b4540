"""Every command's --help, through the real entry point: an example in each; the client and
worker options worded once (`--url` means the server everywhere); every option of the client
and worker commands has help text; env-var defaults written one way; `serve --log-level`."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from cli_support import neuroq
from harness import start_server

from neuroq.cli import COMMANDS, main
from neuroq.client import connection

CLIENT_COMMANDS = [
    ["send"],
    ["jobs", "list"],
    ["jobs", "status"],
    ["jobs", "cancel"],
    ["jobs", "retry"],
    ["jobs", "purge"],
]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_shows_an_example(name: str) -> None:
    done = neuroq(name, "--help")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^\s*Examples?:\n\s+.*neuroq ", done.stdout, re.MULTILINE), done.stdout


def test_the_top_level_help_lists_jobs_and_shows_an_example() -> None:
    done = neuroq("--help")
    assert "jobs " in done.stdout and "Example:" in done.stdout


def command(path: list[str]) -> click.Command:
    ctx = click.Context(main)
    found: click.Command | None = main
    for name in path:
        assert isinstance(found, click.Group)
        found = found.get_command(ctx, name)
    assert found is not None
    return found


def options(path: list[str]) -> dict[str, click.Option]:
    return {p.name: p for p in command(path).params if isinstance(p, click.Option) and p.name}


@pytest.mark.parametrize("path", [*CLIENT_COMMANDS, ["worker"], ["serve"]])
def test_every_option_has_help_and_env_defaults_read_one_way(path: list[str]) -> None:
    for name, option in options(path).items():
        assert option.help, f"{' '.join(path)} --{name} has no help"
        assert "[env var" not in option.help and not option.show_envvar
        if "$" in option.help:
            assert re.search(r"\[default: \$[A-Z_]+", option.help), option.help


@pytest.mark.parametrize("path", [*CLIENT_COMMANDS, ["worker"]])
def test_url_endpoint_and_key_mean_the_same_in_every_command(path: list[str]) -> None:
    found = options(path)
    assert found["url"].help == connection.URL_HELP
    if "endpoint" in found:
        assert found["endpoint"].help == connection.ENDPOINT_HELP
    key_help = connection.WORKER_KEY_HELP if path == ["worker"] else connection.CLIENT_KEY_HELP
    assert found["key"].help == key_help


def test_serve_log_level(tmp_path: Path) -> None:
    quiet = start_server(tmp_path / "quiet", "--log-level", "warning")
    try:
        assert quiet.client().get("/probe/health").status_code == 200
    finally:
        quiet.stop()
    assert " INFO " not in quiet.log(), quiet.log()
    refused = neuroq("serve", "--log-level", "LOUD")
    assert refused.returncode == 2 and "--log-level" in refused.stderr
