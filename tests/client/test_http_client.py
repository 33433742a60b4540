"""`neuroq.http_client.AiohttpClient`, the asyncio client's and the worker's hot path, against
real sockets on loopback: replies come back whole, and every kind of network failure surfaces as
the httpx exception that the shared retry policy (`neuroq.http_retry`) is applied to."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from neuroq import AsyncEndpoint
from neuroq.http_client import AiohttpClient, encode_json

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return lines[0], headers, body


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Serve], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Serve) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_a_reply_comes_back_whole_with_headers_and_query(serve: Callable) -> None:
    seen: list[tuple[str, dict[str, str], bytes]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        body = b'{"ok": true}'
        writer.write(
            b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nRetry-After: 3\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        writer.close()

    url = await serve(handler)
    client = AiohttpClient({"Authorization": "key"})
    try:
        reply = await client.request(
            "POST",
            f"{url}/v2/ep/run",
            params={"wait": "5", "q": "a b"},
            headers={"X-Extra": "1"},
            content=encode_json({"input": "é"}),
            read_timeout_s=5,
        )
    finally:
        await client.aclose()
    assert reply.status_code == 201
    assert reply.headers["retry-after"] == "3"
    assert reply.json() == {"ok": True}
    request_line, headers, body = seen[0]
    assert request_line == "POST /v2/ep/run?wait=5&q=a+b HTTP/1.1"
    assert headers["authorization"] == "key" and headers["x-extra"] == "1"
    assert body == '{"input":"é"}'.encode()


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = AiohttpClient()
    try:
        with pytest.raises(httpx.ConnectError):
            await client.request("GET", f"http://127.0.0.1:{port}/", read_timeout_s=5)
    finally:
        await client.aclose()


async def answer_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await asyncio.sleep(5)  # never answers within the client's timeout
    writer.close()


async def cut_mid_reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial')
    await writer.drain()
    writer.close()


@pytest.mark.parametrize(
    ("handler", "error"),
    [(answer_nothing, httpx.ReadTimeout), (cut_mid_reply, httpx.RemoteProtocolError)],
)
async def test_a_broken_exchange_is_the_matching_httpx_error(
    serve: Callable, handler: Serve, error: type[Exception]
) -> None:
    url = await serve(handler)
    client = AiohttpClient()
    try:
        with pytest.raises(error):
            await client.request("GET", f"{url}/", read_timeout_s=0.2)
    finally:
        await client.aclose()


async def test_async_endpoint_retries_a_dropped_connection_then_succeeds(serve: Callable) -> None:
    """Through the fast path, a status read cut off twice is resent and the third answer
    returned: the same retry policy as over httpx (tested on MockTransport elsewhere)."""
    attempts = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal attempts
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            attempts += 1
            if attempts <= 2:
                writer.close()  # drop the connection without a reply
                return
            body = b'{"id": "job-1", "status": "COMPLETED", "output": 7}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    url = await serve(handler)
    async with AsyncEndpoint("ep", api_key="k", base_url=f"{url}/v2") as endpoint:
        status = await endpoint.job("job-1").status_object()
    assert status["output"] == 7
    assert attempts == 3
