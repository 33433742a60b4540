"""Errors a store raises when the database, not the request, is at fault.

    StoreError
     ├── StoreUnavailable   the operation did not happen and may succeed later (out of space,
     │                      read-only, locked too long, unreachable); the API answers 503
     └── StoreOpenError     the database cannot be opened at all (corrupt, not a database,
                            unreadable); only the operator can fix it, so startup stops

Each store translates its driver's errors into these once, keeping the driver error as
`__cause__`, so the API and the CLI never look at sqlite3 or psycopg exceptions.
"""

from __future__ import annotations


class StoreError(Exception):
    """The job store failed for a reason of its own (the message says which and what to do)."""


class StoreUnavailable(StoreError):
    """The store refused this operation before changing anything; retrying later may succeed.

    `retry_after_s` is the hint sent in `Retry-After`. Raised only where the store knows nothing
    was written, because clients treat 503 as "not delivered" and resend.
    """

    def __init__(self, message: str, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StoreOpenError(StoreError):
    """The database cannot be opened; the message names the file and what to do about it."""
