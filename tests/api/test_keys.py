"""Client and worker keys: header forms, separation of the two kinds, and generated keys that
survive a restart. (The 401 replies are checked in test_client_routes_validation.py.)"""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from harness import start_server

from neuroq.api.auth import Keys, extract_key, load_keys
from neuroq.config import Settings


@pytest.mark.parametrize(
    ("header", "key"),
    [
        ("Bearer abc", "abc"),
        ("bearer abc", "abc"),
        ("BEARER   abc  ", "abc"),
        ("  abc ", "abc"),
        ("abc", "abc"),
        ("Bearer", "Bearer"),  # a bare key that happens to read "Bearer"
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_extract_key(header: str | None, key: str | None) -> None:
    assert extract_key(header) == key


def test_keys_accept_any_configured_key_and_keep_kinds_apart() -> None:
    keys = Keys(client=("c1", "c2"), worker=("w1",))
    assert keys.check_client("Bearer c1") and keys.check_client("c2")
    assert not keys.check_client("w1") and not keys.check_client("c")
    assert not keys.check_client(None) and not keys.check_client("Bearer ")
    assert keys.check_worker("w1") and keys.check_worker("Bearer w1")
    assert not keys.check_worker("c1")
    assert not keys.check_client("Bearer c1\u00e9")  # non-ASCII never crashes


def test_keys_refuse_an_empty_set() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Keys(client=(), worker=("w",))


def test_generated_keys_are_private_and_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    first = load_keys(settings)
    printed = capsys.readouterr().err
    assert first.client[0] in printed and first.worker[0] in printed
    for name in ("api_key", "worker_key"):
        mode = stat.S_IMODE((tmp_path / "data" / name).stat().st_mode)
        assert mode == 0o600
    again = load_keys(settings)
    assert again == first
    assert capsys.readouterr().err == ""  # printed only when generated
    configured = load_keys(Settings(data_dir=tmp_path / "data", api_keys=("mine",)))
    assert configured.client == ("mine",) and configured.worker == first.worker


def test_server_generates_keys_once_and_reuses_them(tmp_path: Path) -> None:
    server = start_server(tmp_path / "gen", NEUROQ_API_KEYS="", NEUROQ_WORKER_KEYS="")
    try:
        client_key = (tmp_path / "gen" / "api_key").read_text().strip()
        worker_key = (tmp_path / "gen" / "worker_key").read_text().strip()
        assert client_key != worker_key
        assert server.log().count(client_key) == 1
        auth = {"Authorization": f"Bearer {client_key}"}
        assert httpx.get(server.base_url + "/g/health", headers=auth).status_code == 200
        server.restart()
        assert httpx.get(server.base_url + "/g/health", headers=auth).status_code == 200
        # Still printed only once, by the first start.
        assert server.log().count(client_key) == 1
        assert server.log().count(worker_key) == 1
    finally:
        server.stop()
