"""Durable job stores: `create_store` picks one from the settings."""

from __future__ import annotations

from neuroq.config import Settings
from neuroq.store.base import JobStore


def create_store(settings: Settings) -> JobStore:
    """SQLite in `settings.data_dir` by default, PostgreSQL for a `postgresql://` URL.

    A PostgreSQL URL may name the schema holding the tables with `?schema=NAME` (default
    `public`); servers sharing one queue must name the same schema.
    """
    recheck_s = settings.recheck_s
    run_ms = round(settings.retention_run_s * 1000)
    sync_ms = round(settings.retention_sync_s * 1000)
    target = settings.store
    if target is None or target == "":
        from neuroq.store.sqlite import SQLiteStore

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        return SQLiteStore(
            settings.data_dir / "neuroq.db",
            recheck_s=recheck_s,
            retention_run_ms=run_ms,
            retention_sync_ms=sync_ms,
        )
    if target.startswith(("postgresql://", "postgres://")):
        from neuroq.store.postgres import PostgresStore, split_schema

        try:
            url, schema = split_schema(target)
            return PostgresStore(
                url,
                schema=schema or "public",
                recheck_s=recheck_s,
                retention_run_ms=run_ms,
                retention_sync_ms=sync_ms,
            )
        except ValueError as exc:
            raise ValueError(f"NEUROQ_STORE: {exc}") from None
    raise ValueError(
        f"NEUROQ_STORE={target!r}: expected empty (SQLite in the data directory) or a"
        " postgresql:// URL"
    )
