"""Dashboard sign-in: session tokens, CSRF tokens and the same-site check.

Sign-in uses the client API key. A correct key (checked in constant time) gets a session token
`expiry.nonce.hmac`, signed with the key itself and holding no key, so it stays valid across
restarts and server processes and dies when the key is removed from the configuration. The
routes put it in an HttpOnly, SameSite=Strict cookie. State-changing requests must also carry
the session's CSRF token (an HMAC of the session) and, when the browser sends them, an `Origin`
/ `Sec-Fetch-Site` naming this site; the strict cookie alone already stops cross-site posts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.requests import Request

from neuroq.api.auth import Keys

SESSION_COOKIE = "neuroq_session"
SESSION_TTL_S = 12 * 3600


class Sessions:
    """Issues and checks session and CSRF tokens signed with the client keys."""

    def __init__(self, keys: Keys) -> None:
        self._keys = tuple(k.encode("utf-8", "surrogateescape") for k in keys.client)
        #: nonces of sessions logged out in this process (others expire with their token)
        self._revoked: set[str] = set()

    def _sign(self, key: bytes, purpose: str, payload: str) -> str:
        return hmac.new(key, f"{purpose}|{payload}".encode(), hashlib.sha256).hexdigest()

    def login(self, presented: str) -> str | None:
        """A new session token when `presented` is a client key, else None. Every key is
        compared in full, whether or not an earlier one matched."""
        candidate = presented.encode("utf-8", "surrogateescape")
        matched: bytes | None = None
        for key in self._keys:
            if hmac.compare_digest(candidate, key):
                matched = key
        if matched is None:
            return None
        payload = f"{int(time.time()) + SESSION_TTL_S}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(matched, 'session', payload)}"

    def _key_of(self, token: str | None) -> bytes | None:
        if not token or token.count(".") != 2:
            return None
        expiry, nonce, signature = token.split(".")
        if not expiry.isdigit() or int(expiry) < time.time() or nonce in self._revoked:
            return None
        payload = f"{expiry}.{nonce}"
        matched: bytes | None = None
        for key in self._keys:
            if hmac.compare_digest(self._sign(key, "session", payload), signature):
                matched = key
        return matched

    def valid(self, token: str | None) -> bool:
        return self._key_of(token) is not None

    def csrf(self, token: str) -> str:
        """The session's CSRF token; "" for an invalid session, which `csrf_ok` never accepts."""
        key = self._key_of(token)
        return "" if key is None else self._sign(key, "csrf", token)

    def csrf_ok(self, token: str | None, presented: str | None) -> bool:
        if token is None or not presented:
            return False
        return hmac.compare_digest(self.csrf(token), presented)

    def logout(self, token: str | None) -> None:
        """Revoke the session in this process; other processes accept it until it expires."""
        if token and token.count(".") == 2:
            self._revoked.add(token.split(".")[1])


def same_site(request: Request) -> bool:
    """False when the browser says the request comes from another site. Only the host is
    compared, so a TLS-terminating proxy in front (https outside, http here) still passes."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")
