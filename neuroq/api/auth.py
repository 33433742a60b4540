"""Client and worker keys, and the one check every route makes against them.

Clients and workers hold different keys so that a leaked worker key (it sits in every worker's
environment) cannot read or cancel other people's jobs. When no key is configured, one of each is
generated into the data directory on first start and reused afterwards, so a restart does not
lock out workers that were given the old one.
"""

from __future__ import annotations

import hmac
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from neuroq.config import Settings

CLIENT_KEY_FILE = "api_key"
WORKER_KEY_FILE = "worker_key"


def extract_key(authorization_header: str | None) -> str | None:
    """The key in an `Authorization` header: `Bearer KEY` (scheme case-insensitive) or the bare
    key as RunPod's cURL examples and its worker SDK send it. None when there is no key."""
    if authorization_header is None:
        return None
    value = authorization_header.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value or None


def _matches_any(presented: str | None, keys: tuple[bytes, ...]) -> bool:
    """Compare against every key without stopping at the first hit or miss, so the time taken
    does not reveal which key (or how much of one) matched."""
    if presented is None:
        return False
    candidate = presented.encode("utf-8", "surrogateescape")
    found = False
    for key in keys:
        found |= hmac.compare_digest(candidate, key)
    return found


@dataclass(frozen=True)
class Keys:
    """The accepted client and worker keys."""

    client: tuple[str, ...]
    worker: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.client or not self.worker:
            raise ValueError("at least one client key and one worker key are required")

    def check_client(self, authorization_header: str | None) -> bool:
        return _matches_any(extract_key(authorization_header), _encoded(self.client))

    def check_worker(self, authorization_header: str | None) -> bool:
        return _matches_any(extract_key(authorization_header), _encoded(self.worker))


def _encoded(keys: tuple[str, ...]) -> tuple[bytes, ...]:
    return tuple(k.encode("utf-8", "surrogateescape") for k in keys)


def load_keys(settings: Settings) -> Keys:
    """Keys from the settings, or generated ones kept in `data_dir` (mode 0600)."""
    client = settings.api_keys or (_stored_key(settings.data_dir / CLIENT_KEY_FILE, "client"),)
    worker = settings.worker_keys or (_stored_key(settings.data_dir / WORKER_KEY_FILE, "worker"),)
    return Keys(client=client, worker=worker)


def _stored_key(path: Path, kind: str) -> str:
    """Read the key at `path`, creating it on first use. The file is created exclusively, so two
    processes starting at once agree on one key; the key is printed only by the one that made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = "nq_" + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        stored = path.read_text(encoding="utf-8").strip()
        if not stored:
            raise ValueError(f"{path} is empty; delete it to generate a new {kind} key") from None
        return stored
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    print(f"neuroq: generated {kind} key {key} (saved in {path})", file=sys.stderr, flush=True)
    return key
