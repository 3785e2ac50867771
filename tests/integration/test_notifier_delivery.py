"""The notifier's delivery paths against the real RabbitMQ, Redis and a real SMTP server
(aiosmtpd): fallback to SMS when email fails for good, quiet hours and digests with a clock the
test moves, a digest flush retried after a crash, an SMTP server that is down for a while
(circuit breaker open, then closed), the delivery deadline, and every case event bound."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from casegate_notifier.adapters.sandbox import Sandbox
from casegate_notifier.app import DELIVERY, PENDING, init_app
from casegate_notifier.dispatch import Settled, deliver
from casegate_notifier.domain.delivery import Medium, Route, delivery_key
from casegate_notifier.domain.facts import facts_of
from casegate_notifier.domain.policy import notifications_for
from casegate_notifier.domain.samples import sample_contact, sample_snapshot
from casegate_notifier.pending import DigestItem, digest_notification, digest_recipient
from casegate_notifier.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    CaseChange,
    CaseUpdated,
    Channel,
    Envelope,
    envelope,
    new_case_ref,
)
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.support.bus_events import published
from tests.integration.test_notifier_smtp import Mailbox, smtp_server

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def settings_for(
    bus_settings: BusSettings, redis_url: str, *, smtp_port: int | None = None, **extra: Any
) -> Settings:
    values: dict[str, Any] = {
        "scheduler_tick_s": 0.05, "notify_policy_file": ROOT / "config/notify.yaml"
    }
    return Settings(
        **bus_settings.model_dump(),
        redis_url=redis_url,
        redis_prefix=f"p{bus_settings.bus_prefix}",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}" if smtp_port else None,
        **{**values, **extra},
    )


@asynccontextmanager
async def notifier(
    settings: Settings, clock: FakeClock | None = None
) -> AsyncIterator[web.Application]:
    app = await init_app(settings, clock=clock)
    server = TestServer(app, port=free_port())
    await server.start_server()
    try:
        yield app
    finally:
        await server.close()


def outcomes(bus_settings: BusSettings) -> AbstractAsyncContextManager[list[dict[str, Any]]]:
    """Every notification.* event published on this test's exchange, parsed, as it arrives."""
    return published(bus_settings, "notification.*")

@asynccontextmanager
async def sandbox_of(settings: Settings) -> AsyncIterator[Sandbox]:
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        yield Sandbox(redis, settings.redis_prefix, 10_000)
    finally:
        await redis.aclose()


def updated(
    change: CaseChange,
    *,
    status: str = "open",
    actor: str = "erin",
    ref: str | None = None,
    **contact: Any,
) -> Envelope[CaseUpdated]:
    ref = ref or new_case_ref()
    case = sample_snapshot(ref=ref, status=status, customer=sample_contact(**contact))
    payload = CaseUpdated(change=change, ref=ref, actor=actor, case=case, previous="open")
    return envelope(payload, source="case-store", subject=ref, routing_key=f"case.{change.value}")


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def notifications(result: str, provider: str = "smtp", channel: str = "email") -> float:
    labels = {"channel": channel, "provider": provider, "result": result}
    return count("casegate_notifications_total", **labels)


def transitions(to: str) -> float:
    return count("casegate_notifier_breaker_transitions_total", provider="smtp", to=to)


async def test_email_refused_for_good_falls_back_to_sms_and_the_outcome_says_so(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(rcpt_reply="550 5.1.1 no such user"), free_port()
    settings = settings_for(bus_settings, redis_url, smtp_port=port)
    event = updated(CaseChange.STATUS_CHANGED, status="resolved")
    async with (
        smtp_server(mailbox, port),
        outcomes(bus_settings) as seen,
        notifier(settings),
        sandbox_of(settings) as sandbox,
    ):
        await publisher.publish(event)

        async def customer_answered() -> bool:
            return any(o["data"]["recipient"] == "+14155550100" for o in seen)

        await eventually(customer_answered)
        await publisher.publish(event)  # a redelivery: nothing new may go out

        async def answered_twice() -> bool:
            return sum(o["data"]["recipient"] == "+14155550100" for o in seen) >= 2

        await eventually(answered_twice)
        await asyncio.sleep(0.3)
        texts = await sandbox.messages(case_ref=event.data.ref, channel="sms")
    assert mailbox.rcpt_attempts == 1 and mailbox.received == []
    [sms] = texts
    assert sms["to"] == "+14155550100" and f"{event.data.ref} is resolved" in sms["body"]
    customer = [o for o in seen if o["data"]["recipient"] == "+14155550100"]
    assert {o["id"] for o in customer} == {customer[0]["id"]}  # the repeat is the same event
    data = customer[0]["data"]
    assert customer[0]["type"] == "notification.sent"
    assert (data["channel"], data["fallback_from"], data["provider"]) == ("sms", "email", "sandbox")
    assert data["reason"].startswith("email: ") and "550" in data["reason"]
    assert data["notification_key"] == f"{event.id}/sms/+14155550100"


async def test_quiet_hours_hold_until_the_customers_morning_and_urgent_ones_go_at_once(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    clock = FakeClock(datetime(2025, 1, 15, 22, 30, tzinfo=UTC))  # 23:30 in Berlin
    settings = settings_for(bus_settings, redis_url)
    quiet = {"quiet_hours": ("22:00", "07:00"), "timezone": "Europe/Berlin"}
    resolved = updated(CaseChange.STATUS_CHANGED, status="resolved", **quiet)
    breached = updated(CaseChange.SLA_BREACHED, **quiet)  # internal and urgent: the owner now
    async with (
        outcomes(bus_settings) as seen,
        notifier(settings, clock) as app,
        sandbox_of(settings) as sandbox,
    ):
        await publisher.publish(resolved)
        await publisher.publish(breached)

        async def owner_told() -> bool:
            ref = breached.data.ref
            return any(o["subject"] == ref and o["data"]["recipient"] == "U0BOB" for o in seen)

        await eventually(owner_told)
        pending = app[PENDING]

        async def held() -> bool:
            return await pending.held.size() == 1

        await eventually(held)
        async def to_ann() -> list[dict[str, Any]]:
            mails = await sandbox.messages(case_ref=resolved.data.ref, channel="email")
            return [m for m in mails if m["to"] == "ann@example.com"]

        await asyncio.sleep(0.3)  # several timer ticks: nothing may leave at night
        assert await to_ann() == []
        clock.now = datetime(2025, 1, 16, 5, 59, tzinfo=UTC)  # 06:59 in Berlin
        await asyncio.sleep(0.3)
        assert await to_ann() == []
        clock.now = datetime(2025, 1, 16, 6, 0, 1, tzinfo=UTC)

        async def morning() -> bool:
            return len(await to_ann()) >= 1

        await eventually(morning)
        await publisher.publish(resolved)  # redelivered after it went: not held, not resent
        await asyncio.sleep(0.5)
        [mail] = await to_ann()
        assert await pending.held.size() == 0
    assert mail["to"] == "ann@example.com" and "Resolved" in mail["subject"]
    customer = [o for o in seen if o["data"]["recipient"] == "ann@example.com"]
    assert {o["type"] for o in customer} == {"notification.sent"}
    assert len({o["id"] for o in customer}) == 1


async def test_updates_within_the_window_go_out_as_one_digest(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    clock = FakeClock(datetime(2025, 1, 15, 10, 0, tzinfo=UTC))
    settings = settings_for(bus_settings, redis_url)
    ref = new_case_ref()
    events = [
        updated(CaseChange.ASSIGNED, ref=ref),
        updated(CaseChange.NOTE_ADDED, ref=ref),
        updated(CaseChange.STATUS_CHANGED, status="closed", ref=ref),
    ]
    async with (
        outcomes(bus_settings) as seen,
        notifier(settings, clock) as app,
        sandbox_of(settings) as sandbox,
    ):
        for ev in [*events, events[1]]:  # the note twice: a redelivery adds nothing
            await publisher.publish(ev)
        queued_before = notifications("queued", provider="digest")

        async def all_queued() -> bool:
            return await app[PENDING].digests.due.size() >= 1 and (
                notifications("queued", provider="digest") >= queued_before
            )

        await eventually(all_queued)
        await asyncio.sleep(0.5)
        assert await sandbox.messages(channel="email") == []  # the window (300 s) is still open
        clock.now += timedelta(seconds=301)

        async def digested() -> bool:
            return len(await sandbox.messages(channel="email")) >= 1 and len(seen) >= 4

        await eventually(digested)
        await asyncio.sleep(0.3)
        mails = await sandbox.messages(channel="email")
    [digest] = mails
    assert digest["to"] == "dave@corp.example" and digest["subject"] == "3 case updates"
    assert digest["body"].count(f"[{ref}]") == 3
    for summary in ("Assigned", "New internal note", "Status closed"):
        assert summary in digest["body"]
    watcher = [o for o in seen if o["data"]["recipient"] == "dave@corp.example"]
    assert len(watcher) == 3
    assert {o["data"]["reason"] for o in watcher} == {"in a digest of 3 update(s)"}
    assert {o["data"]["notification_key"] for o in watcher} == {
        f"{ev.id}/email/dave@corp.example" for ev in events
    }
    # The owner (bob, in Slack) got his assignment notice in a digest too, on Slack.
    assert any(o["data"]["recipient"] == "U0BOB" for o in seen)


async def test_a_retried_digest_flush_neither_duplicates_nor_loses_an_update(
    bus_settings: BusSettings, redis_url: str
) -> None:
    clock = FakeClock(datetime(2025, 1, 15, 10, 0, tzinfo=UTC))
    settings = settings_for(bus_settings, redis_url, scheduler_tick_s=3600)  # the test ticks
    window = timedelta(seconds=301)
    async with (
        outcomes(bus_settings) as seen,
        notifier(settings, clock) as app,
        sandbox_of(settings) as sandbox,
    ):
        pending, delivery = app[PENDING], app[DELIVERY]
        items = []
        for i in range(4):
            facts = facts_of(updated(CaseChange.NOTE_ADDED))
            [n] = [n for n in notifications_for(delivery.policy, facts) if n.audience == "watchers"]
            item = DigestItem(
                notification=n, correlation_id=f"c{i}", summary=f"update {i}", queued_at=clock.now
            )
            items.append(item)
        recipient = digest_recipient(items[0].notification)

        async def append(i: int) -> None:
            it = items[i]
            due = clock.now + timedelta(seconds=300)
            key = it.notification.dedupe_key
            assert await pending.digests.append(recipient, key, it.model_dump_json(), due)

        async def mails() -> list[str]:
            return [m["body"] for m in await sandbox.messages(channel="email")]

        await append(0)
        await append(1)
        # Crash 1: a flush claimed the batch, then died before sending it.
        claimed = await pending.digests.flush(recipient, "batch-a")
        assert claimed is not None and claimed[0] == "batch-a" and len(claimed[1]) == 2
        await append(2)  # arrives while batch-a is claimed: it must wait for the next one
        clock.now += window
        assert await pending.drain_once() == 1  # the retried flush gets batch-a back, as it was
        [first] = await mails()
        assert "update 0" in first and "update 1" in first and "update 2" not in first
        # Crash 2: the next batch is claimed and sent, then the process dies before completing.
        clock.now += window
        claimed = await pending.digests.flush(recipient, "batch-b")
        assert claimed is not None
        batch = [DigestItem.model_validate_json(r) for r in claimed[1]]
        assert [b.summary for b in batch] == ["update 2"]
        sent = await deliver(delivery, digest_notification("digest", "batch-b", batch), clock.now)
        assert isinstance(sent, Settled) and sent.result.ok and len(await mails()) == 2
        await append(3)
        assert await pending.drain_once() == 1  # retried: batch-b again, the ledger knows it went
        assert len(await mails()) == 2
        clock.now += window
        assert await pending.drain_once() == 1  # and the update that came meanwhile
        assert await pending.drain_once() == 0  # nothing left

        async def every_update_reported() -> bool:
            return len(seen) >= 4

        await eventually(every_update_reported)
        await asyncio.sleep(0.2)
        bodies = await mails()
    assert len(bodies) == 3
    joined = "\n".join(bodies)
    for i in range(4):
        assert joined.count(f"update {i}") == 1, (i, joined)  # each update once, none lost
    keys = sorted(o["data"]["notification_key"] for o in seen)
    assert keys == sorted(
        delivery_key(it.notification.event_id, Route(Medium.EMAIL, "dave@corp.example"))
        for it in items
    )


async def test_smtp_down_for_a_while_opens_the_breaker_then_everything_goes_once(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(), free_port()  # nothing listens on `port` yet
    settings = settings_for(
        bus_settings, redis_url, smtp_port=port,
        breaker_failures=3, breaker_window_s=30, breaker_probe_s=0.5, retry_base_s=0.05,
    )
    events = [
        updated(CaseChange.STATUS_CHANGED, status="resolved", email=f"c{i}@example.com", phone=None)
        for i in range(10)
    ]
    opened_before, closed_before = transitions("open"), transitions("closed")
    async with outcomes(bus_settings) as seen, notifier(settings) as app:
        breaker = app[DELIVERY].breaker
        for ev in events:
            await publisher.publish(ev)

        async def opened() -> bool:
            return await breaker.is_open("smtp")

        await eventually(opened)
        assert transitions("open") == opened_before + 1
        tries_before = notifications("retry")
        await asyncio.sleep(2.0)
        tries = notifications("retry") - tries_before
        # Ten notifications keep coming back (Defer, every 100 ms here), but only the probes
        # reach the server: about one per 0.5 s, where a closed breaker would allow ~200.
        assert tries <= 12, tries
        assert seen == [] and await breaker.is_open("smtp")
        async with smtp_server(mailbox, port):

            async def delivered() -> bool:
                return sum(o["type"] == "notification.sent" for o in seen) >= 10

            await eventually(delivered, timeout=20)
            await asyncio.sleep(0.5)
        assert not await breaker.is_open("smtp")
    assert transitions("closed") == closed_before + 1
    rcpts = sorted(r for rcpt_tos, _ in mailbox.received for r in rcpt_tos)
    assert rcpts == sorted(f"c{i}@example.com" for i in range(10))  # each once, none lost
    assert [o["type"] for o in seen].count("notification.sent") == 10


async def test_past_the_deadline_a_temporary_failure_is_reported_failed_not_parked(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    settings = settings_for(
        bus_settings, redis_url, smtp_port=free_port(),  # never answers
        delivery_deadline_s=1.0, retry_base_s=0.05, breaker_probe_s=0.2,
    )
    event = updated(CaseChange.STATUS_CHANGED, status="resolved", phone=None)
    async with outcomes(bus_settings) as seen, notifier(settings):
        await publisher.publish(event)

        async def reported() -> bool:
            return len(seen) >= 1

        await eventually(reported, timeout=15)
        await asyncio.sleep(0.3)
    [out] = [o for o in seen if o["data"]["recipient"] == "ann@example.com"]
    assert out["type"] == "notification.failed"
    assert out["data"]["permanent"] is False and out["data"]["reason"].startswith("gave up after ")
    assert out["data"]["fallback_from"] is None


async def test_every_case_change_is_bound_and_those_the_policy_ignores_are_acked(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    settings = settings_for(bus_settings, redis_url)
    async with outcomes(bus_settings), notifier(settings), sandbox_of(settings) as sandbox:
        for change in CaseChange:
            # Mandatory publishes: an unbound routing key would raise here.
            status = "resolved" if change is CaseChange.STATUS_CHANGED else "open"
            await publisher.publish(updated(change, status=status))

        async def replied() -> bool:
            return any(m["event_type"] == "case.reply_added" for m in await sandbox.messages())

        await eventually(replied)
        await asyncio.sleep(0.5)
    connection = await aio_pika.connect(bus_settings.amqp_url)
    try:
        channel = await connection.channel()
        for name in ("notifier.changes", "notifier.internal"):
            full = f"{bus_settings.bus_prefix}.{name}"
            queue = await channel.declare_queue(full, passive=True)
            parked = await channel.declare_queue(f"{full}.dlq", passive=True)
            assert queue.declaration_result.message_count == 0, name
            assert parked.declaration_result.message_count == 0, name
    finally:
        await connection.close()


async def test_a_reply_reaches_the_customer_even_with_an_empty_policy(
    bus_settings: BusSettings, redis_url: str, publisher: Bus, tmp_path: Path
) -> None:
    policy = tmp_path / "notify.yaml"
    policy.write_text("rules: []\n")
    settings = settings_for(bus_settings, redis_url, notify_policy_file=policy)
    ev = updated(CaseChange.REPLY_ADDED)
    reply = {
        "body": "Your refund is on its way.",
        "channel": Channel.EMAIL,
        "reply_to": "ann@example.com",
    }
    ev = ev.model_copy(update={"data": ev.data.model_copy(update=reply)})
    note = updated(CaseChange.NOTE_ADDED)
    internal = {"body": "internal: refund approved"}
    note = note.model_copy(update={"data": note.data.model_copy(update=internal)})
    async with outcomes(bus_settings) as seen, notifier(settings), sandbox_of(settings) as sandbox:
        await publisher.publish(note)
        await publisher.publish(ev)

        async def sent() -> bool:
            return len(seen) >= 1

        await eventually(sent)
        await asyncio.sleep(0.3)
        mails = await sandbox.messages()
    [mail] = mails
    assert mail["to"] == "ann@example.com" and mail["case_ref"] == ev.data.ref
    assert mail["subject"].startswith(f"Re: [{ev.data.ref}]")
    assert "Your refund is on its way." in mail["body"]
    assert "refund approved" not in json.dumps(mails)
