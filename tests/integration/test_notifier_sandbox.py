"""The notifier with the sandbox provider, against the real RabbitMQ and Redis: one case.opened
gives one captured acknowledgement and one notification.sent, also under duplicate deliveries
to two replicas; the sandbox's HTTP views show (escaped) what was captured."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from casegate_notifier.app import init_app
from casegate_notifier.domain.facts import facts_of
from casegate_notifier.domain.policy import notifications_for
from casegate_notifier.domain.policy_file import load_policy
from casegate_notifier.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    CaseCustomer,
    CaseOpened,
    Channel,
    Envelope,
    Priority,
    derived_event_id,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port


def case_opened(
    email: str | None = "ann@example.com", subject: str = "Invoice is wrong", ref: str | None = None
) -> Envelope[CaseOpened]:
    ref = ref or new_case_ref()
    return envelope(
        CaseOpened(
            ref=ref,
            customer=CaseCustomer(id=1, name="Ann Lee", email=email),
            channel=Channel.WEBFORM,
            subject=subject,
            body="The amount is wrong.",
            priority=Priority.P3,
            status="new",
            opened_at=datetime.now(UTC),
        ),
        source="case-store",
        subject=ref,
    )


def settings_for(bus_settings: BusSettings, redis_url: str, **extra: Any) -> Settings:
    return Settings(
        **bus_settings.model_dump(),
        redis_url=redis_url,
        redis_prefix=f"p{bus_settings.bus_prefix}",
        **extra,
    )


@asynccontextmanager
async def notifier(settings: Settings) -> AsyncIterator[TestServer]:
    server = TestServer(await init_app(settings), port=free_port())
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def outcomes(bus_settings: BusSettings) -> AsyncIterator[list[AbstractIncomingMessage]]:
    """Every notification.* event published on this test's exchange, as it arrives."""
    seen: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(bus_settings.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            bus_settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "notification.*")

        async def keep(message: AbstractIncomingMessage) -> None:
            seen.append(message)
            await message.ack()

        await queue.consume(keep)
        yield seen
    finally:
        await connection.close()


async def test_case_opened_gives_one_sandbox_message_and_one_sent_event(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    event = case_opened()
    ref = event.data.ref
    settings = settings_for(bus_settings, redis_url)
    async with outcomes(bus_settings) as seen, notifier(settings) as srv:
        await publisher.publish(event)

        async def sent() -> bool:
            return len(seen) >= 1

        await eventually(sent)
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.make_url("/sandbox/messages")) as resp:
                messages = await resp.json()

    [msg] = messages
    assert msg["subject"] == f"[{ref}] We received your request: Invoice is wrong"
    assert msg["to"] == "ann@example.com"
    assert msg["case_ref"] == ref and msg["channel"] == "email"
    assert ref in msg["body"] and msg["dedupe_key"] and msg["time"]

    [out] = seen
    body = json.loads(out.body)
    assert out.routing_key == "notification.sent" and body["type"] == "notification.sent"
    assert body["source"] == "notifier"
    assert body["subject"] == ref
    assert body["correlationid"] == event.correlationid
    assert body["id"] == derived_event_id("notification", msg["dedupe_key"], "sent")
    data = body["data"]
    assert data["outcome"] == "sent" and data["provider"] == "sandbox"
    assert data["recipient"] == "ann@example.com" and data["template"] == "case_opened"
    assert data["notification_key"] == msg["dedupe_key"]
    assert data["provider_message_id"] == msg["message_id"]


async def test_duplicate_deliveries_to_two_replicas_send_exactly_once(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    bus_settings = bus_settings.model_copy(update={"bus_max_attempts": 8, "bus_prefetch": 8})
    settings = settings_for(bus_settings, redis_url)
    event = case_opened()
    copies = 6
    async with outcomes(bus_settings) as seen, notifier(settings) as one, notifier(settings):
        await asyncio.gather(*(publisher.publish(event) for _ in range(copies)))

        async def every_copy_answered() -> bool:
            # Each delivery ends in one outcome: sent by whoever won, repeated by the others.
            return len(seen) >= copies

        await eventually(every_copy_answered, timeout=15)
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as http:
            async with http.get(one.make_url("/sandbox/messages")) as resp:
                messages = await resp.json()

    assert len(messages) == 1, messages
    assert len(seen) == copies
    sent_id = derived_event_id("notification", messages[0]["dedupe_key"], "sent")
    assert {m.message_id for m in seen} == {sent_id}
    assert {m.routing_key for m in seen} == {"notification.sent"}


async def test_a_customer_without_email_is_logged_and_not_notified(
    bus_settings: BusSettings, redis_url: str, publisher: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    event = case_opened(email=None)
    caplog.set_level(logging.INFO, logger="casegate_notifier.handlers")
    settings = settings_for(bus_settings, redis_url)
    async with outcomes(bus_settings) as seen, notifier(settings) as srv:
        await publisher.publish(event)

        async def explained() -> bool:
            return any(
                r.getMessage() == "nobody to notify"
                and getattr(r, "ref", None) == event.data.ref
                and str(getattr(r, "reason", "")).startswith("customer has no reachable channel")
                and "email: no usable address" in str(getattr(r, "reason", ""))
                for r in caplog.records
            )

        await eventually(explained)
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.make_url("/sandbox/messages")) as resp:
                assert await resp.json() == []
    assert seen == []


async def test_sandbox_views_filter_escape_and_clear(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    first = case_opened(subject="<script>alert(1)</script>")
    second = case_opened(email="bob@example.com", subject="Second")
    settings = settings_for(bus_settings, redis_url)
    async with outcomes(bus_settings) as seen, notifier(settings) as srv:
        await publisher.publish(first)
        await publisher.publish(second)

        async def both() -> bool:
            return len(seen) >= 2

        await eventually(both)
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.make_url("/readyz")) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(srv.make_url("/sandbox/messages")) as resp:
                assert len(await resp.json()) == 2
            url = srv.make_url("/sandbox/messages").with_query(case_ref=second.data.ref)
            async with http.get(url) as resp:
                [only] = await resp.json()
                assert only["to"] == "bob@example.com"
            async with http.get(srv.make_url("/sandbox")) as resp:
                page = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html"
                assert "<script>" not in page
                assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
                assert first.data.ref in page and second.data.ref in page
            async with http.delete(srv.make_url("/sandbox/messages")) as resp:
                assert resp.status == 204
            async with http.get(srv.make_url("/sandbox/messages")) as resp:
                assert await resp.json() == []


async def test_sandbox_keeps_only_the_newest_messages(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    events = [case_opened(ref=None) for _ in range(3)]
    settings = settings_for(bus_settings, redis_url, sandbox_max=2)
    async with outcomes(bus_settings) as seen, notifier(settings) as srv:
        for event in events:
            await publisher.publish(event)

            async def answered(n: int = len(seen) + 1) -> bool:
                return len(seen) >= n

            await eventually(answered)
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.make_url("/sandbox/messages")) as resp:
                kept = [m["case_ref"] for m in await resp.json()]
    assert kept == [events[1].data.ref, events[2].data.ref]  # oldest first, the first one trimmed


async def test_readiness_fails_when_redis_is_unreachable(
    bus_settings: BusSettings, publisher: Bus
) -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    async with notifier(settings_for(bus_settings, dead_redis)) as srv:
        async with aiohttp.ClientSession() as http:
            async with http.get(srv.make_url("/readyz")) as resp:
                assert resp.status == 503
                assert "redis" in (await resp.json())["failures"]


async def test_a_claim_left_by_a_crashed_sender_is_retried_after_its_lease(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    bus_settings = bus_settings.model_copy(update={"bus_retry_base_ms": 200, "bus_max_attempts": 6})
    settings = settings_for(bus_settings, redis_url)
    event = case_opened()
    [n] = notifications_for(load_policy(settings.notify_policy_file), facts_of(event))
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        async with outcomes(bus_settings) as seen, notifier(settings) as srv:
            # What a replica killed mid-send leaves behind: a claim that only its lease ends
            # (set once this notifier is up, so a slow start cannot use up the lease).
            await redis.set(f"{settings.redis_prefix}:notify:{n.dedupe_key}", "sending", px=2000)
            await publisher.publish(event)
            await asyncio.sleep(1.0)
            assert seen == []  # held off while the lease lasts

            async def sent() -> bool:
                return len(seen) >= 1

            await eventually(sent, timeout=10)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as http:
                async with http.get(srv.make_url("/sandbox/messages")) as resp:
                    assert len(await resp.json()) == 1
        assert len(seen) == 1
        assert await redis.get(f"{settings.redis_prefix}:notify:{n.dedupe_key}") == "done"
    finally:
        await redis.aclose()
