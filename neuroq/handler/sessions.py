"""Conversation sessions in one SQLite file in the data directory.

The original kept sessions in a process-local dict: lost on restart, not shared between workers,
unbounded, never expiring. Here every worker on the machine opens the same file (WAL, so readers
never block the writer), each session keeps at most `max_messages` messages, and sessions
untouched for `ttl_s` are deleted on the next write.

Session ids are checked here too, not only by the handler's input validation, because the file
outlives any one caller: an id with a control character in it would be stored for good.
"""

from __future__ import annotations

import re
import reprlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from neuroq.config import HandlerSettings

#: messages kept per session (the original's cap)
MAX_MESSAGES = 20
#: messages of history put in front of a new prompt (the original used the last 4)
HISTORY_MESSAGES = 4
#: a session unused this long is forgotten (a day; the handler's is NEUROQ_SESSION_TTL_S)
DEFAULT_TTL_S = HandlerSettings.session_ttl_s
#: what a session id may be; always applied with fullmatch, as `$` would accept a final newline
SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS session_messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions (updated_at);
"""


def check_session_id(value: str) -> str:
    """`value` if it is a valid session id; else a ValueError naming the field."""
    if not isinstance(value, str) or SESSION_ID.fullmatch(value) is None:
        raise ValueError(
            f"session_id: must be 1-128 characters A-Z a-z 0-9 _ . : - starting with a letter"
            f" or digit, got {reprlib.repr(value)}"
        )
    return value


@dataclass(frozen=True)
class Message:
    role: str  #: "user" or "assistant"
    content: str


class SessionStore:
    """Thread-safe: one connection, used under a lock (calls are short)."""

    def __init__(
        self, path: Path, *, max_messages: int = MAX_MESSAGES, ttl_s: float = DEFAULT_TTL_S
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_messages = max_messages
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        # Another worker may hold the write lock for a moment; wait rather than fail.
        self._db = sqlite3.connect(path, timeout=10.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def history(self, session_id: str, limit: int = HISTORY_MESSAGES) -> list[Message]:
        """The last `limit` messages of a live session, oldest first ([] if none or expired)."""
        check_session_id(session_id)
        cutoff = time.time() - self.ttl_s
        with self._lock:
            row = self._db.execute(
                "SELECT updated_at FROM sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None or row[0] < cutoff:
                return []
            rows = self._db.execute(
                "SELECT role, content FROM session_messages WHERE session_id = ? "
                "ORDER BY seq DESC LIMIT ?",
                (session_id, limit),
            ).fetchall()
        return [Message(role, content) for role, content in reversed(rows)]

    def append(self, session_id: str, user: str, assistant: str) -> int:
        """Record one exchange; returns the number of messages the session now holds."""
        check_session_id(session_id)
        now = time.time()
        with self._lock, self._db:
            self._expire(now)
            self._db.execute(
                "INSERT INTO sessions (session_id, updated_at) VALUES (?, ?) "
                "ON CONFLICT (session_id) DO UPDATE SET updated_at = excluded.updated_at",
                (session_id, now),
            )
            (last,) = self._db.execute(
                "SELECT COALESCE(MAX(seq), 0) FROM session_messages WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            self._db.executemany(
                "INSERT INTO session_messages (session_id, seq, role, content, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [
                    (session_id, last + 1, "user", user, now),
                    (session_id, last + 2, "assistant", assistant, now),
                ],
            )
            self._db.execute(
                "DELETE FROM session_messages WHERE session_id = ? AND seq <= ?",
                (session_id, last + 2 - self.max_messages),
            )
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM session_messages WHERE session_id = ?", (session_id,)
            ).fetchone()
        return int(count)

    def clear(self, session_id: str) -> bool:
        """Forget a session; True if it existed."""
        check_session_id(session_id)
        with self._lock, self._db:
            self._db.execute("DELETE FROM session_messages WHERE session_id = ?", (session_id,))
            cur = self._db.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))
        return cur.rowcount > 0

    def count(self) -> int:
        cutoff = time.time() - self.ttl_s
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM sessions WHERE updated_at >= ?", (cutoff,)
            ).fetchone()
        return int(n)

    def _expire(self, now: float) -> None:
        cutoff = now - self.ttl_s
        self._db.execute(
            "DELETE FROM session_messages WHERE session_id IN "
            "(SELECT session_id FROM sessions WHERE updated_at < ?)",
            (cutoff,),
        )
        self._db.execute("DELETE FROM sessions WHERE updated_at < ?", (cutoff,))
