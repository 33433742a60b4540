"""How the store tests open each backend (shared by the fixtures and the process tests)."""

from __future__ import annotations

import os
from pathlib import Path

from neuroq.store.base import JobStore

BACKENDS = ["sqlite", "postgres"]
POSTGRES_URL = os.environ.get("NEUROQ_TEST_POSTGRES_URL", "")

#: short retentions so expiry is easy to reach with explicit times
RETENTION_RUN_MS = 60_000
RETENTION_SYNC_MS = 5_000


async def open_store(backend: str, tmp_path: Path, schema: str | None = None) -> JobStore:
    store: JobStore
    if backend == "sqlite":
        from neuroq.store.sqlite import SQLiteStore

        store = SQLiteStore(
            tmp_path / "neuroq.db",
            retention_run_ms=RETENTION_RUN_MS,
            retention_sync_ms=RETENTION_SYNC_MS,
        )
    else:
        from neuroq.store.postgres import PostgresStore

        store = PostgresStore(
            POSTGRES_URL,
            schema=schema or "public",
            retention_run_ms=RETENTION_RUN_MS,
            retention_sync_ms=RETENTION_SYNC_MS,
        )
    await store.open()
    return store


async def drop_schema(schema: str) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
