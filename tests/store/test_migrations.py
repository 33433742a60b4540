"""A database written by an older neuroq opens in this one: its schema is migrated in place,
every job kept, and a database from a newer neuroq is refused with one clear message."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from neuroq.endpoints import EndpointConfig
from neuroq.jobs import NewJob, now_ms
from neuroq.store.errors import StoreOpenError
from neuroq.store.sql import read_sql
from neuroq.store.sqlite import SCHEMA_VERSION, SQLiteStore, _split_script


def version_1_database(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in _split_script(read_sql("sqlite_schema.sql")):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()


async def test_a_version_1_sqlite_file_is_migrated_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "neuroq.db"
    version_1_database(path)
    old = SQLiteStore(path)
    conn = sqlite3.connect(path)
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert "jobs" in tables and "endpoints" not in tables
    await old.open()
    try:
        job, _ = await old.submit(NewJob("ep", "{}"), now_ms())
        stored = await old.put_endpoint(EndpointConfig("ep", handler="m:h"), now_ms())
        assert await old.get_endpoint("ep") == stored
        assert await old.get("ep", job.id) is not None
    finally:
        await old.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_a_version_1_file_with_jobs_keeps_them(tmp_path: Path) -> None:
    path = tmp_path / "neuroq.db"
    version_1_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO jobs (id, endpoint_id, status, input_json, execution_timeout_ms, ttl_ms,"
        " low_priority, sync, created_at_ms, ttl_deadline_ms)"
        " VALUES ('old-1', 'ep', 'IN_QUEUE', '{}', 600000, 86400000, 0, 0, ?, ?)",
        (now_ms(), now_ms() + 86_400_000),
    )
    conn.close()
    store = SQLiteStore(path)
    await store.open()
    try:
        (taken,) = await store.take("ep", "w1", 1, now_ms(), 30_000)
        assert taken.id == "old-1"
    finally:
        await store.close()


async def test_a_newer_database_is_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "neuroq.db"
    version_1_database(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreOpenError, match=f"{path}: schema version {SCHEMA_VERSION + 1}"):
        await SQLiteStore(path).open()
