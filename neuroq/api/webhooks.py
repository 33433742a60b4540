"""Webhook delivery: POST a finished job's status object to the URL its client gave
(docs/worker-protocol.md, Webhooks).

The store queues a delivery in the same transaction that ends the job (an outbox), so a job's
state never waits on a webhook and a delivery survives a restart. This module only drains that
outbox: each due delivery is POSTed as JSON, any 2xx counts, redirects are not followed, and a
failure is retried `webhook_retries` more times, `webhook_retry_delay_s` apart, then dropped.

The server makes these requests from inside the operator's network on behalf of whoever submitted
the job, so by default it refuses targets that resolve to private, loopback, link-local, CGNAT,
multicast, reserved or unspecified addresses, and connects to the very address it checked (no
second lookup for DNS rebinding to exploit). `webhook_allow_private` lifts the check for
self-hosted setups whose receivers live on the same network.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass, field

import httpx

from neuroq.config import Settings
from neuroq.jobs import now_ms
from neuroq.store.base import JobStore, WebhookDelivery

log = logging.getLogger("neuroq.webhooks")

USER_AGENT = "neuroq-webhook/0.1"
#: deliveries in flight at once per process; more wait for the next round
MAX_IN_FLIGHT = 32

_CGNAT = ipaddress.ip_network("100.64.0.0/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(Exception):
    """The webhook URL may not be called: bad scheme, no host, or a forbidden address."""


def forbidden_reason(address: str) -> str | None:
    """Why a webhook may not connect to `address` (an IP literal), or None when it may.

    IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are judged as the IPv4 address they carry,
    and an IPv6 zone (`fe80::1%eth0`) is ignored.
    """
    ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "CGNAT"
    # Before is_private, which also covers 240.0.0.0/4 in Python's table.
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    return None


@dataclass(frozen=True)
class Target:
    """Where to send one delivery: the URL to connect to and the headers/extensions that make
    the request look, to the receiver and to TLS, like one to the original host."""

    url: httpx.URL
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def _parse(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise WebhookRefused(f"scheme {parsed.scheme!r} is not http or https")
    if not parsed.host:
        raise WebhookRefused("the URL has no host")
    return parsed


async def resolve_target(url: str, *, allow_private: bool, timeout_s: float) -> Target:
    """Check `url` and pin it to an address that passed the check.

    The lookup runs in the event loop's thread pool (getaddrinfo blocks). Every address the name
    resolves to must pass, not just the first, since the connection could use any of them.
    """
    parsed = _parse(url)
    if allow_private:
        return Target(parsed)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout_s
        )
    except (OSError, TimeoutError) as exc:
        raise WebhookRefused(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookRefused(f"{host} resolves to no address")
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None:
            raise WebhookRefused(
                f"{host} resolves to {address}, a {reason} address "
                "(set NEUROQ_WEBHOOK_ALLOW_PRIVATE=true to allow)"
            )
    pinned = parsed.copy_with(host=addresses[0].split("%", 1)[0])
    headers = {"Host": parsed.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(pinned, headers, extensions)


class WebhookSender:
    """Drains the store's webhook outbox; one per server process."""

    def __init__(
        self,
        store: JobStore,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        # The transport, not a client: a client would follow no redirect here anyway, and it
        # logs every full URL at INFO, which would put the secrets webhook URLs carry in logs.
        self.transport = transport or httpx.AsyncHTTPTransport()
        self._tasks: set[asyncio.Task[bool]] = set()

    async def run_once(self) -> int:
        """Claim the deliveries that are due and start them; returns how many were started.
        Deliveries run as their own tasks, so one slow receiver does not hold up the others."""
        room = MAX_IN_FLIGHT - len(self._tasks)
        if room <= 0:
            return 0
        due = await self.store.due_webhooks(now_ms(), room)
        for delivery in due:
            task = asyncio.create_task(self.deliver(delivery))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(due)

    async def deliver(self, delivery: WebhookDelivery) -> bool:
        """Make one attempt and record it; True when the receiver answered 2xx."""
        attempt = delivery.attempts + 1
        host = _host_for_log(delivery.url)
        try:
            target = await resolve_target(
                delivery.url,
                allow_private=self.settings.webhook_allow_private,
                timeout_s=self.settings.webhook_timeout_s,
            )
        except WebhookRefused as exc:
            log.warning("webhook for job %s refused, not sent: %s", delivery.job_id, exc)
            await self.store.webhook_attempted(
                delivery.id, ok=False, now_ms=now_ms(), next_attempt_at_ms=None
            )
            return False
        outcome = await self._post(target, delivery.body_json)
        ok = outcome is None
        next_at: int | None = None
        if ok:
            log.info(
                "webhook for job %s delivered to %s (attempt %d)", delivery.job_id, host, attempt
            )
        elif attempt <= self.settings.webhook_retries:
            next_at = now_ms() + int(self.settings.webhook_retry_delay_s * 1000)
            log.info(
                "webhook for job %s to %s failed (attempt %d: %s); retrying",
                delivery.job_id,
                host,
                attempt,
                outcome,
            )
        else:
            log.warning(
                "webhook for job %s to %s failed (attempt %d: %s); giving up",
                delivery.job_id,
                host,
                attempt,
                outcome,
            )
        await self.store.webhook_attempted(
            delivery.id, ok=ok, now_ms=now_ms(), next_attempt_at_ms=next_at
        )
        return ok

    async def _post(self, target: Target, body_json: str) -> str | None:
        """POST the body; None on a 2xx, else a short reason. The reply body is never read."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **target.headers,
        }
        timeout = httpx.Timeout(self.settings.webhook_timeout_s).as_dict()
        request = httpx.Request(
            "POST",
            target.url,
            content=body_json.encode("utf-8"),
            headers=headers,
            extensions={"timeout": timeout, **target.extensions},
        )
        try:
            # httpx's timeout bounds each phase; this bounds the whole attempt, so a receiver
            # trickling its reply cannot hold a delivery past its claim in the store.
            async with asyncio.timeout(self.settings.webhook_timeout_s):
                response = await self.transport.handle_async_request(request)
                await response.aclose()
            if 200 <= response.status_code < 300:
                return None
            return f"HTTP {response.status_code}"
        except TimeoutError:
            return f"no reply within {self.settings.webhook_timeout_s} s"
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def aclose(self) -> None:
        """Stop deliveries in flight (their claims lapse and they are retried by the next
        process) and close the connection pool."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.transport.aclose()


def _host_for_log(url: str) -> str:
    """Only the host goes to the logs: webhook URLs often carry a secret in their path or query."""
    try:
        return httpx.URL(url).host or "?"
    except (httpx.InvalidURL, TypeError):
        return "?"
