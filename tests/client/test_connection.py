"""One resolution order for server URL, endpoint and keys (neuroq.client.connection), shared by
the library and the commands: arguments, then the environment, then defaults, with a local
server's generated key files offered only to a server on this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuroq.client import connection
from neuroq.client._core import ClientConfig


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding what a local `neuroq serve` generates."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".neuroq").mkdir()
    (tmp_path / ".neuroq" / "api_key").write_text("local-client\n")
    (tmp_path / ".neuroq" / "worker_key").write_text("local-worker\n")
    return tmp_path / ".neuroq"


def test_url_argument_then_neuroq_api_url_then_neuroq_url_then_default() -> None:
    env = {"NEUROQ_API_URL": "http://a:1", "NEUROQ_URL": "http://b:2"}
    assert connection.server_url("http://arg:3", env) == "http://arg:3"
    assert connection.server_url(None, env) == "http://a:1"
    assert connection.server_url(None, {"NEUROQ_URL": "http://b:2"}) == "http://b:2"
    assert connection.server_url(None, {}) == "http://127.0.0.1:8000"


def test_the_url_means_the_server_with_or_without_v2() -> None:
    assert connection.server_origin("http://h:8000/v2/") == "http://h:8000"
    assert connection.server_origin("http://h:8000") == "http://h:8000"
    for url in ("http://h:8000", "http://h:8000/v2"):
        assert ClientConfig.resolve("ep", base_url=url, env={}).base_url == "http://h:8000/v2"


def test_endpoint_argument_then_environment_then_neuroq() -> None:
    assert connection.endpoint_id("arg", {"RUNPOD_ENDPOINT_ID": "env"}) == "arg"
    assert connection.endpoint_id(None, {"RUNPOD_ENDPOINT_ID": "env"}) == "env"
    assert connection.endpoint_id(None, {}) == "neuroq"


def test_keys_fall_back_to_the_local_servers_files(data_dir: Path) -> None:
    assert connection.client_key(None, None, {}) == "local-client"
    assert connection.worker_key(None, "http://localhost:8000", {}) == "local-worker"
    assert connection.client_key(None, None, {"RUNPOD_API_KEY": "env"}) == "env"
    assert connection.worker_key(None, None, {"NEUROQ_WORKER_KEY": "env"}) == "env"
    assert connection.worker_key("arg", None, {"NEUROQ_WORKER_KEY": "env"}) == "arg"


def test_key_files_are_never_offered_to_another_host(data_dir: Path) -> None:
    for url in ("https://api.runpod.ai/v2", "http://10.0.0.5:8000"):
        assert connection.client_key(None, url, {}) is None
        assert connection.worker_key(None, url, {}) is None
    # The URL from the environment counts as much as one passed in.
    assert connection.client_key(None, None, {"NEUROQ_API_URL": "http://10.0.0.5:8000"}) is None


def test_data_dir_comes_from_neuroq_data_dir(data_dir: Path, tmp_path: Path) -> None:
    elsewhere = {"NEUROQ_DATA_DIR": str(tmp_path / "elsewhere")}
    assert connection.client_key(None, None, elsewhere) is None
    assert connection.client_key(None, None, {"NEUROQ_DATA_DIR": str(data_dir)}) == "local-client"


def test_the_library_resolves_as_the_cli_does(data_dir: Path) -> None:
    """Was: `Endpoint()` from the repository root raised "no endpoint id", then got 401, where
    `neuroq send` just worked."""
    config = ClientConfig.resolve(env={})
    assert (config.endpoint_id, config.api_key, config.base_url) == (
        "neuroq",
        "local-client",
        "http://127.0.0.1:8000/v2",
    )
