"""Names that become durable keys or identifiers are matched whole: `^...$` with `re.match`
accepts a trailing newline, because `$` also matches just before a final "\n". Covers session ids
(the session store and the handler's input validation), checkpoint names (the handler's input
validation) and the PostgreSQL schema name, and that each refusal names the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuroq.config import Settings
from neuroq.handler.actions import Service
from neuroq.handler.sessions import SessionStore
from neuroq.handler.validation import InputError, validate
from neuroq.store import create_store
from neuroq.store.postgres import PostgresStore

TRAILING = ["abc\n", "abc\r\n", "abc\n\n", "\nabc", "a b", ""]


@pytest.mark.parametrize("bad", TRAILING)
def test_session_store_refuses_bad_ids_naming_the_field(tmp_path: Path, bad: str) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite3")
    try:
        for call in (
            lambda: store.append(bad, "hi", "hello"),
            lambda: store.history(bad),
            lambda: store.clear(bad),
        ):
            with pytest.raises(ValueError, match=r"^session_id: must be 1-128 characters"):
                call()
        assert store.count() == 0
    finally:
        store.close()


def test_session_store_accepts_good_ids(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "sessions.sqlite3")
    try:
        for good in ("a", "user-1.chat:2", "A" * 128):
            assert store.append(good, "hi", "hello") == 2
        with pytest.raises(ValueError, match="session_id"):
            store.append("A" * 129, "hi", "hello")
    finally:
        store.close()


async def test_clear_session_with_trailing_newline_fails_naming_the_field(tmp_path: Path) -> None:
    service = Service(tmp_path)
    try:
        reply = await service.handle({"input": {"action": "clear_session", "session_id": "B\n"}})
        assert reply["error"].startswith("session_id: must be 1-128 characters")
        assert service.sessions.count() == 0
    finally:
        service.sessions.close()


def test_postgres_schema_name_with_trailing_newline_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^schema='public\\n': expected a plain identifier"):
        PostgresStore("postgresql://u@127.0.0.1/db", schema="public\n")
    with pytest.raises(ValueError, match=r"^NEUROQ_STORE: schema='s1\\n'"):
        create_store(Settings(store="postgresql://u@127.0.0.1/db?schema=s1%0A"))


def test_handler_refuses_session_id_with_trailing_newline() -> None:
    with pytest.raises(InputError, match=r"^session_id: must be"):
        validate({"action": "generate", "prompt": "hi", "session_id": "abc\n"})


@pytest.mark.parametrize("field", ["model", "checkpoint"])
def test_handler_refuses_checkpoint_name_with_trailing_newline(field: str) -> None:
    with pytest.raises(InputError, match=rf"^{field}: must be a checkpoint name"):
        validate({"action": "init", field: "tiny\n"})


@pytest.mark.parametrize("field", ["model", "checkpoint"])
def test_handler_bad_names_name_the_field(field: str) -> None:
    with pytest.raises(InputError, match=r"^session_id: must be"):
        validate({"action": "generate", "prompt": "hi", "session_id": "../x"})
    with pytest.raises(InputError, match=rf"^{field}: must be a checkpoint name"):
        validate({"action": "init", field: "../x"})
