"""The `neuroq` command. Each subcommand lives beside the part it drives and is imported only when
it runs, so `neuroq send` never pays for importing torch or the server."""

from __future__ import annotations

import importlib

import click

# name -> ("module:attribute" of a click command, one-line help shown by `neuroq --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("neuroq.api.commands:serve", "Run the job server (and optionally local workers)."),
    "worker-env": (
        "neuroq.api.commands:worker_env",
        "Print the environment an unmodified RunPod worker needs to attach.",
    ),
    "worker": ("neuroq.worker.commands:worker", "Run a handler as a worker attached to a server."),
    "scaler": (
        "neuroq.scaler.commands:scaler",
        "Start and stop workers for a server's configured endpoints, on this machine.",
    ),
    "endpoint": (
        "neuroq.scaler.commands:endpoint",
        "Configure endpoints: workers, scaling rule, default executionTimeout.",
    ),
    "send": ("neuroq.client.commands:send", "Submit one job and wait for its result."),
    "jobs": (
        "neuroq.client.jobs_commands:jobs",
        "List, follow, cancel, retry or purge jobs on a server.",
    ),
    "train": ("neuroq.model.commands:train", "Train a NeuroQ model on a text corpus."),
    "generate": ("neuroq.model.commands:generate", "Generate text with a NeuroQ checkpoint."),
    "tokenizer": ("neuroq.model.commands:tokenizer", "Train the SentencePiece tokenizer."),
    "model": (
        "neuroq.model.commands:model",
        "List the models in the data directory; reset 'default' to the shipped one.",
    ),
}

# An example for each command whose own help shows none, appended to its --help. The client
# commands (send, jobs) carry theirs in their docstrings.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "serve": (
        "neuroq serve --worker neuroq.handler:handler --endpoint neuroq",
        "neuroq serve --host 0.0.0.0 --port 8001 --log-level DEBUG",
    ),
    "worker-env": ('eval "$(neuroq worker-env --endpoint neuroq --url http://127.0.0.1:8000)"',),
    "worker": (
        "neuroq worker my_handler.py:handler --endpoint demo",
        "neuroq worker neuroq.handler:handler --url http://gpu-host:8000 --concurrency 4",
    ),
    "scaler": ("neuroq scaler --url http://127.0.0.1:8000",),
    "endpoint": ("neuroq endpoint create demo --handler my_handler.py:handler --workers-max 2",),
    "train": ("neuroq train --corpus default --out checkpoints/mine --epochs 3",),
    "generate": ('neuroq generate "こんにちは" --stream',),
    "model": ("neuroq model list",),
    "tokenizer": ("neuroq tokenizer --corpus default --out checkpoints/tok",),
}


def _with_example(name: str, command: click.Command) -> click.Command:
    """Append EXAMPLES[name] to the command's help, unless its help has an example already."""
    examples = EXAMPLES.get(name)
    if not examples or "Example" in (command.help or "") or command.epilog:
        return command
    lines = "\n".join(f"  {example}" for example in examples)
    command.epilog = f"\b\nExample{'s' if len(examples) > 1 else ''}:\n{lines}"
    return command


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return _with_example(cmd_name, command)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every command (torch, the server): use the static help.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="neuroq-serverless")
def main() -> None:
    """NeuroQ Serverless: a self-hosted, RunPod-compatible job service.

    `neuroq COMMAND --help` describes a command, with examples. The client and worker commands
    share one way of finding the server, endpoint and key (docs/client.md, "Settings").

    \b
    Example:
      neuroq serve --worker neuroq.handler:handler &
      neuroq send '{"action": "health"}'
    """


if __name__ == "__main__":
    main()
