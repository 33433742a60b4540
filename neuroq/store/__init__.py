"""Durable job stores: `create_store` picks one from the settings."""

from __future__ import annotations

import logging
from pathlib import Path

from neuroq.config import MB, Settings
from neuroq.store.base import JobStore

#: files and folders that show a data directory has been used before (keys, models, sessions)
OTHER_STATE = ("api_key", "worker_key", "checkpoints", "sessions.sqlite3")

log = logging.getLogger("neuroq.store")


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
        path = settings.data_dir / "neuroq.db"
        _warn_if_emptied(path)
        return SQLiteStore(
            path,
            recheck_s=recheck_s,
            retention_run_ms=run_ms,
            retention_sync_ms=sync_ms,
            max_size_bytes=settings.sqlite_max_size_mb * MB,
        )
    if target.startswith(("postgresql://", "postgres://")):
        from neuroq.store.postgres import PostgresStore, split_schema

        if settings.store_pool_size < 1:
            raise ValueError(
                f"NEUROQ_STORE_POOL_SIZE: must be at least 1, got {settings.store_pool_size}"
            )
        try:
            url, schema = split_schema(target)
            return PostgresStore(
                url,
                schema=schema or "public",
                recheck_s=recheck_s,
                retention_run_ms=run_ms,
                retention_sync_ms=sync_ms,
                pool_max_size=settings.store_pool_size,
            )
        except ValueError as exc:
            raise ValueError(f"NEUROQ_STORE: {exc}") from None
    raise ValueError(
        f"NEUROQ_STORE={target!r}: expected empty (SQLite in the data directory) or a"
        " postgresql:// URL"
    )


def _warn_if_emptied(path: Path) -> None:
    """SQLite opens a zero-byte file as a new, empty database, so a truncated `neuroq.db` would
    quietly start an empty queue. Beside other state the data directory has been used before,
    so the jobs were probably lost: say so loudly, naming the file."""
    try:
        if path.stat().st_size != 0:
            return
    except OSError:
        return  # missing (a first start) or unreadable (opening it reports that)
    others = [name for name in OTHER_STATE if (path.parent / name).exists()]
    if others:
        log.warning(
            "%s is empty (0 bytes) but %s holds other state (%s): starting with an EMPTY job"
            " queue. If jobs were expected, stop the server and restore %s from a backup.",
            path,
            path.parent,
            ", ".join(others),
            path.name,
        )
