"""Signed outbound webhooks: POST a JSON document about a case event to a subscriber's URL.

Signature: `X-Casegate-Signature: sha256=<hex>`, the HMAC-SHA256 with the subscriber's secret
over "<timestamp>.<body>", and `X-Casegate-Timestamp: <unix seconds>`, so a receiver can refuse
old or replayed deliveries; `X-Casegate-Delivery` is the same on every attempt of one delivery.

A subscriber URL is configured by people, so it is an SSRF risk: https only (unless allowed),
and every address it resolves to is checked when the connection is made (a resolver that
refuses loopback, private, link-local, multicast, reserved and metadata addresses unless
`CASEGATE_WEBHOOK_ALLOW_PRIVATE`), so a name that re-resolves elsewhere cannot slip by.
Redirects are not followed: a 3xx is a permanent failure, never a second, unchecked request.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import time
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ..domain.delivery import Outbound, SendResult

SIGNATURE_HEADER = "X-Casegate-Signature"
TIMESTAMP_HEADER = "X-Casegate-Timestamp"
DELIVERY_HEADER = "X-Casegate-Delivery"
TEMPORARY_STATUSES = frozenset({408, 425, 429})


class RefusedAddress(Exception):
    """A webhook URL that points where we must not send (not an OSError: aiohttp would
    retitle it a connection problem, and a connection problem is worth retrying)."""


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, header: str, *, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    expected = "sha256=" + sign(secret, timestamp, body)
    return fresh and hmac.compare_digest(expected, header)


def refused(address: str) -> str | None:
    """Why we may not connect to `address`, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata lives there)"
    if ip.is_private or not ip.is_global:
        return "a private or reserved address"
    if ip.is_multicast:
        return "a multicast address"
    return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves like aiohttp does, then refuses the answer if any address is not public."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = await self._inner.resolve(host, port, family)
        for answer in answers:
            if (why := refused(answer["host"])) is not None:
                raise RefusedAddress(f"{host} resolves to {why}")
        return answers

    async def close(self) -> None:
        await self._inner.close()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class WebhookSender:
    name = "webhook"

    def __init__(
        self,
        subscribers: dict[str, tuple[str, bytes]],
        *,
        allow_http: bool,
        allow_private: bool,
        timeout_s: float,
    ) -> None:
        self._subscribers = subscribers  # name -> (url, secret)
        self._allow_http = allow_http
        self._allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            resolver = DefaultResolver() if self._allow_private else PublicOnlyResolver()
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver, limit=32),
                timeout=self._timeout,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def check_url(self, url: str) -> str | None:
        """Why this URL is refused before any connection, or None."""
        parts = urlsplit(url)
        if parts.scheme != "https" and not (parts.scheme == "http" and self._allow_http):
            return "only https webhook URLs are allowed"
        if not parts.hostname:
            return "the URL names no host"
        if not self._allow_private:
            try:
                why = refused(parts.hostname)  # an IP literal skips the resolver
            except ValueError:
                why = None  # a name: the resolver checks what it resolves to
            if why is not None:
                return f"{parts.hostname} is {why}"
        return None

    async def send(self, outbound: Outbound) -> SendResult:
        subscriber = self._subscribers.get(outbound.to)
        if subscriber is None:
            reason = f"no webhook subscriber named {outbound.to!r}"
            return SendResult.failed(reason, temporary=False)
        url, secret = subscriber
        if (why := self.check_url(url)) is not None:
            return SendResult.failed(f"webhook {outbound.to} refused: {why}", temporary=False)
        document = outbound.data or {}
        body = json.dumps(document, separators=(",", ":"), sort_keys=True, default=str).encode()
        timestamp = str(int(time.time()))
        headers: dict[str, Any] = {
            "Content-Type": "application/json",
            "User-Agent": "casegate-notifier",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: "sha256=" + sign(secret, timestamp, body),
            DELIVERY_HEADER: hashlib.sha256(outbound.dedupe_key.encode()).hexdigest()[:32],
        }
        try:
            post = self._client().post(url, data=body, headers=headers, allow_redirects=False)
            async with post as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
        except RefusedAddress as exc:
            return SendResult.failed(f"webhook {outbound.to} refused: {exc}", temporary=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = f"webhook {outbound.to}: {type(exc).__name__}: {exc}"
            return SendResult.failed(reason, temporary=True)
        if 200 <= status < 300:
            return SendResult.sent(headers[DELIVERY_HEADER])
        reason = f"webhook {outbound.to} answered {status}"
        if 300 <= status < 400:
            return SendResult.failed(f"{reason}: redirects are not followed", temporary=False)
        temporary = status in TEMPORARY_STATUSES or status >= 500
        return SendResult.failed(reason, temporary=temporary, retry_after_s=retry_after)
