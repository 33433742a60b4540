"""The HTTP layer under the asyncio client and the worker: aiohttp, in two forms.

It sits outside both packages because both use it. It only sends; what to do about a failed
request is decided by the caller.

Why aiohttp: httpx's own asyncio connection pool costs milliseconds per request and serialises
badly under concurrency (on a 2-core machine: about 170 requests/s at 32 concurrent requests,
against about 1,000/s through aiohttp; see bench/bench_jobs.py).

- `AiohttpClient.request` is the hot path (one JSON request, whole reply): it skips httpx
  altogether, whose request building (URL parsing twice, cookie handling) cost more CPU than
  aiohttp's whole exchange. Its `Reply` has the attributes callers read off an httpx.Response.
- `AiohttpTransport` is an httpx transport, for what still goes through an httpx client:
  streamed replies (server-sent events) and tests, which inject `httpx.MockTransport` instead.

aiohttp errors are mapped to the httpx exceptions the callers already handle.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
from yarl import URL


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, self._request) from exc

    async def aclose(self) -> None:
        self._response.release()


def _map_error(exc: BaseException, request: httpx.Request | None) -> httpx.TransportError:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, TimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.NetworkError(message, request=request)


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, inside the running event loop) with
    keep-alive connections; at most `limit` open connections (0 = no limit)."""

    def __init__(self, *, limit: int = 100) -> None:
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # httpx decodes Content-Encoding itself, and sets its own default headers.
            self._session = _new_session(self._limit, auto_decompress=False)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.get("connect"),
            sock_read=timeouts.get("read"),
        )
        body = await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        try:
            response = await self._get_session().request(
                request.method,
                str(request.url),
                data=body or None,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, request) from exc
        except asyncio.CancelledError:
            raise
        return httpx.Response(
            response.status,
            headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers],
            stream=_ResponseStream(response, request),
            request=request,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _new_session(
    limit: int, *, auto_decompress: bool, headers: Mapping[str, str] | None = None
) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit),
        headers=headers,
        auto_decompress=auto_decompress,
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
    )


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole HTTP reply: the part of httpx.Response that the client and worker read."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def encode_json(value: Any) -> bytes:
    """A request body as httpx's `json=` would send it; ValueError for NaN or infinity."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


class AiohttpClient:
    """Keep-alive JSON requests over one aiohttp session (created on first use, inside the
    running event loop); `headers` go with every request."""

    def __init__(self, headers: Mapping[str, str] | None = None, *, limit: int = 100) -> None:
        self._headers = dict(headers or {})
        self._limit = limit
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, float | None], aiohttp.ClientTimeout] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = _new_session(self._limit, auto_decompress=True, headers=self._headers)
        return self._session

    def _timeout(self, read_s: float | None, connect_s: float | None) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get((read_s, connect_s))
        if timeout is None:
            if len(self._timeouts) > 64:
                self._timeouts.clear()
            timeout = aiohttp.ClientTimeout(total=None, connect=connect_s, sock_read=read_s)
            self._timeouts[(read_s, connect_s)] = timeout
        return timeout

    async def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        read_timeout_s: float | None,
        connect_timeout_s: float | None = 10.0,
    ) -> Reply:
        """Send one request and read the whole reply; aiohttp and timeout errors are raised
        as the matching httpx.TransportError."""
        if params:
            url = f"{url}?{urlencode(params)}"
        try:
            async with self._get_session().request(
                method,
                URL(url, encoded=True),
                data=content,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout(read_timeout_s, connect_timeout_s),
            ) as response:
                body = await response.read()
                return Reply(response.status, response.headers, body)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _map_error(exc, None) from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
