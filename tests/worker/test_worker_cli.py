"""`neuroq worker` argument errors: each names what is wrong, before any network call."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from neuroq.cli import main


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["neuroq.demo_handlers:echo", "--endpoint", "e"], {}, "a worker key is required"),
        (
            ["neuroq.demo_handlers:echo", "--endpoint", "e", "--url", "localhost:1"],
            {"NEUROQ_WORKER_KEY": "k"},
            "url must start with http:// or https://",
        ),
        (
            ["neuroq.demo_handlers:echo", "--endpoint", "a/b"],
            {"NEUROQ_WORKER_KEY": "k"},
            "endpoint must be 1-128 characters",
        ),
        (
            ["neuroq.demo_handlers:echo", "--endpoint", "e", "--worker-id", "w 1"],
            {"NEUROQ_WORKER_KEY": "k"},
            "worker_id must be 1-128 characters",
        ),
        (
            ["neuroq.demo_handlers:echo", "--endpoint", "e", "--concurrency", "0"],
            {"NEUROQ_WORKER_KEY": "k"},
            "--concurrency",
        ),
        (
            ["nosuchmodule_xyz:run", "--endpoint", "e"],
            {"NEUROQ_WORKER_KEY": "k"},
            "no module named 'nosuchmodule_xyz'",
        ),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = CliRunner().invoke(main, ["worker", *args], env={"NEUROQ_WORKER_KEY": "", **env})
    assert result.exit_code == 2, result.output
    assert message in result.output
