"""Where to connect and with which key: the one resolution order for the library
(`Endpoint`, `AsyncEndpoint`, `send_and_wait`), `neuroq send`, `neuroq jobs` and `neuroq worker`.

Each value is the first of: the argument (or flag), the environment, then a default.

    server URL   url / --url   $NEUROQ_API_URL, then $NEUROQ_URL   http://127.0.0.1:8000
    endpoint     --endpoint    $RUNPOD_ENDPOINT_ID                 neuroq
    client key   --key         $RUNPOD_API_KEY                     <data dir>/api_key
    worker key   --key         $NEUROQ_WORKER_KEY                  <data dir>/worker_key

The URL may be given with or without `/v2`: clients add it, workers drop it. The key files are the
ones a local `neuroq serve` generates (data dir: $NEUROQ_DATA_DIR or .neuroq); they are read only
when the server is on this machine, so a key meant for the local server is never sent elsewhere.
The help texts are defined here too, so every command describes these options in the same words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from neuroq.config import DEFAULT_ENDPOINT

DEFAULT_SERVER_URL = "http://127.0.0.1:8000"
#: NEUROQ_URL is the worker's older name for the same setting, still honoured
URL_VARS = ("NEUROQ_API_URL", "NEUROQ_URL")
CLIENT_KEY_FILE = "api_key"
WORKER_KEY_FILE = "worker_key"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")

URL_HELP = (
    "Server address, http://HOST:PORT (a trailing /v2 is accepted)."
    "  [default: $NEUROQ_API_URL, $NEUROQ_URL or http://127.0.0.1:8000]"
)
ENDPOINT_HELP = "Endpoint id (the queue).  [default: $RUNPOD_ENDPOINT_ID or neuroq]"
CLIENT_KEY_HELP = (
    "Client API key.  [default: $RUNPOD_API_KEY, or for a server on this machine "
    "$NEUROQ_DATA_DIR/api_key (.neuroq/api_key)]"
)
#: how every command's --data-dir help states its default
DATA_DIR_DEFAULT = "[default: $NEUROQ_DATA_DIR or .neuroq]"
WORKER_KEY_HELP = (
    "Worker key.  [default: $NEUROQ_WORKER_KEY, or for a server on this machine "
    "$NEUROQ_DATA_DIR/worker_key (.neuroq/worker_key)]"
)


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def server_url(url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The server URL as given (not normalised): argument, $NEUROQ_API_URL, $NEUROQ_URL, default."""
    env = _env(env)
    for candidate in (url, *(env.get(name) for name in URL_VARS)):
        if candidate and candidate.strip():
            return candidate.strip()
    return DEFAULT_SERVER_URL


def server_origin(url: str) -> str:
    """`http://host:port` from a URL that may end in `/v2`, for the worker's own route builder."""
    url = url.strip().rstrip("/")
    return url.removesuffix("/v2")


def endpoint_id(endpoint: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """The endpoint: argument, $RUNPOD_ENDPOINT_ID, then `neuroq` (what `serve --worker` uses)."""
    return endpoint or _env(env).get("RUNPOD_ENDPOINT_ID") or DEFAULT_ENDPOINT


def client_key(
    key: str | None, url: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The client key: argument, $RUNPOD_API_KEY, then a local server's generated key file."""
    env = _env(env)
    return key or env.get("RUNPOD_API_KEY") or local_key(CLIENT_KEY_FILE, url, env)


def worker_key(
    key: str | None, url: str | None = None, env: Mapping[str, str] | None = None
) -> str | None:
    """The worker key: argument, $NEUROQ_WORKER_KEY, then a local server's generated key file."""
    env = _env(env)
    return key or env.get("NEUROQ_WORKER_KEY") or local_key(WORKER_KEY_FILE, url, env)


def is_local(url: str | None) -> bool:
    return urlsplit(url or DEFAULT_SERVER_URL).hostname in _LOOPBACK


def local_key(name: str, url: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """The key a local `neuroq serve` generated into its data dir, so `serve` then `send` (or
    `worker`) works with no configuration. None for a server on another host: the file's key is
    never offered anywhere else."""
    if not is_local(url if url is not None else server_url(None, env)):
        return None
    path = Path(_env(env).get("NEUROQ_DATA_DIR") or ".neuroq") / name
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
