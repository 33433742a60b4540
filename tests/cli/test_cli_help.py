"""Every command's and subcommand's --help, walked from the real `neuroq` group: an example in
each; help text on every option; defaults written one way (`[default: ...]`, an environment
variable as `$NAME`, never click's `[env var: ...]` or a bare `[value]`) and stated wherever an
option has one; `--url` means the server everywhere; every JSON example of `neuroq send` (its
--help and docs/client.md) is an input the NeuroQ handler accepts; `serve --log-level`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from cli_support import neuroq
from click.testing import CliRunner
from harness import start_server

from neuroq.cli import main
from neuroq.client import connection
from neuroq.handler.requests import PROTECTED, InitRequest, TrainRequest, model_name
from neuroq.handler.validation import validate

REPO = Path(__file__).resolve().parents[2]


def walk(group: click.Group = main, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The path of every command below `group`, groups and their subcommands included."""
    ctx = click.Context(group)
    found: list[tuple[str, ...]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += walk(command, (*path, name))
    return found


EVERY_COMMAND = walk()
CLIENT_COMMANDS = [p for p in EVERY_COMMAND if p[0] in ("send", "jobs") and p != ("jobs",)]


def command(path: tuple[str, ...]) -> click.Command:
    found: click.Command | None = main
    for name in path:
        assert isinstance(found, click.Group)
        found = found.get_command(click.Context(found), name)
    assert found is not None
    return found


def options(path: tuple[str, ...]) -> dict[str, click.Option]:
    return {p.name: p for p in command(path).params if isinstance(p, click.Option) and p.name}


def shown_help(path: tuple[str, ...], option: click.Option) -> str:
    """The option's help as --help prints it, click's bracketed extras included."""
    record = option.get_help_record(click.Context(command(path)))
    assert record is not None
    return " ".join(record[1].split())


def test_the_walk_reaches_every_subcommand() -> None:
    for path in [("jobs", "logs"), ("model", "reset"), ("endpoint", "create"), ("scaler",)]:
        assert path in EVERY_COMMAND


@pytest.mark.parametrize("path", EVERY_COMMAND, ids=" ".join)
def test_every_command_shows_an_example(path: tuple[str, ...]) -> None:
    done = CliRunner().invoke(main, [*path, "--help"])
    assert done.exit_code == 0, done.output
    section = re.search(r"^ *Examples?:\n((?: {4,}.*\n?)+)", done.output, re.MULTILINE)
    assert section, done.output
    assert f"neuroq {' '.join(path)}" in section.group(1), done.output


def test_the_top_level_help_lists_jobs_and_shows_an_example() -> None:
    done = neuroq("--help")
    assert "jobs " in done.stdout and "Example:" in done.stdout


#: a range click shows beside a default, e.g. `x>=0` or `0.0<=x<1.0`
RANGE = re.compile(r"[-\d.]*[<>]?=?x[<>]=?[-\d.]*")


@pytest.mark.parametrize("path", EVERY_COMMAND, ids=" ".join)
def test_every_option_has_help_and_states_its_default_one_way(path: tuple[str, ...]) -> None:
    for name, option in options(path).items():
        where = f"neuroq {' '.join(path)} --{name}"
        assert option.help, f"{where} has no help"
        assert not option.show_envvar, where
        text = shown_help(path, option)
        for extras in re.findall(r"\[([^\[\]]*)\]", text):
            for part in extras.split("; "):
                if part.startswith("default: "):
                    # click's `show_default="..."` renders as `[default: (...)]`
                    assert not part.startswith("default: ("), f"{where}: {text}"
                    assert not re.search(r"(?<!\$)\b(NEUROQ|RUNPOD)_", part), f"{where}: {text}"
                else:
                    assert part == "required" or RANGE.fullmatch(part), f"{where}: {text}"
        prose = re.sub(r"\[[^\[\]]*\]", "", text)
        assert not re.search(r"\(default\b|\bdefault:|\bby default\b", prose), f"{where}: {text}"
        if not option.is_flag and option.default not in (None, (), click.core.UNSET):
            assert "[default: " in text, f"{where} does not state its default: {text}"


@pytest.mark.parametrize("path", [p for p in EVERY_COMMAND if "url" in options(p)], ids=" ".join)
def test_url_means_the_server_in_every_command(path: tuple[str, ...]) -> None:
    assert options(path)["url"].help == connection.URL_HELP


@pytest.mark.parametrize("path", [*CLIENT_COMMANDS, ("worker",), ("worker-env",)], ids=" ".join)
def test_endpoint_and_key_mean_the_same_in_every_client_and_worker_command(
    path: tuple[str, ...],
) -> None:
    found = options(path)
    assert found["endpoint"].help == connection.ENDPOINT_HELP
    if "key" in found:
        key_help = connection.WORKER_KEY_HELP if path == ("worker",) else connection.CLIENT_KEY_HELP
        assert found["key"].help == key_help


def send_examples() -> list[str]:
    """The JSON given inline to `neuroq send` in its --help and in docs/client.md."""
    shown = neuroq("send", "--help").stdout + (REPO / "docs" / "client.md").read_text("utf-8")
    lines = [
        line
        for line in shown.splitlines()
        if line.strip().startswith(("neuroq send ", "echo ")) and "neuroq send" in line
    ]
    return [found for line in lines for found in re.findall(r"'(\{[^']*\})'", line)]


def test_every_send_example_is_an_input_the_handler_accepts() -> None:
    """Was: `neuroq send '{"action": "train"}'`, which the handler refuses, since a train job
    without "model" would replace the shipped `default` model."""
    examples = send_examples()
    assert any('"train"' in example for example in examples), examples
    for example in examples:
        request = validate(json.loads(example))
        if isinstance(request, TrainRequest | InitRequest):
            name = model_name(request.model, request.mode)
            assert name not in PROTECTED or request.overwrite, example


def test_serve_log_level(tmp_path: Path) -> None:
    quiet = start_server(tmp_path / "quiet", "--log-level", "warning")
    try:
        assert quiet.client().get("/probe/health").status_code == 200
    finally:
        quiet.stop()
    assert " INFO " not in quiet.log(), quiet.log()
    refused = neuroq("serve", "--log-level", "LOUD")
    assert refused.returncode == 2 and "--log-level" in refused.stderr
