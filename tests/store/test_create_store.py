"""`create_store` picks the backend named by the settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuroq.config import Settings
from neuroq.store import create_store
from neuroq.store.postgres import PostgresStore
from neuroq.store.sqlite import SQLiteStore


async def test_default_is_sqlite_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "new" / "dir", retention_run_s=2.5, recheck_s=0.1)
    store = create_store(settings)
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "new" / "dir" / "neuroq.db"
    assert store.retention_run_ms == 2500 and store.retention_sync_ms == 60_000
    assert store.recheck_s == 0.1
    await store.open()
    await store.close()
    assert store.path.exists()


@pytest.mark.parametrize("url", ["postgresql://u@h/db", "postgres://u@h/db"])
def test_postgres_urls(url: str) -> None:
    store = create_store(Settings(store=url, retention_sync_s=3))
    assert isinstance(store, PostgresStore)
    assert store.url == url and store.retention_sync_ms == 3000


def test_anything_else_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="NEUROQ_STORE='mysql://x'"):
        create_store(Settings(store="mysql://x"))


def test_the_postgresql_pool_size_is_a_setting() -> None:
    store = create_store(Settings(store="postgresql://u@h/db", store_pool_size=3))
    assert isinstance(store, PostgresStore)
    assert store._pool.max_size == 3
    assert create_store(Settings(store="postgresql://u@h/db"))._pool.max_size == 10  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="NEUROQ_STORE_POOL_SIZE: must be at least 1, got 0"):
        create_store(Settings(store="postgresql://u@h/db", store_pool_size=0))
    env = {"NEUROQ_STORE": "postgresql://u@h/db", "NEUROQ_STORE_POOL_SIZE": "24"}
    assert create_store(Settings.from_env(env))._pool.max_size == 24  # type: ignore[attr-defined]
