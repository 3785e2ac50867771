"""case-store against the real RabbitMQ and PostgreSQL: messages apply exactly once, route
decisions and notification outcomes land on the case, bad references are parked, and the
outbox relay publishes everything that was committed, once."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import pytest
from aiohttp import web
from tests.conftest import eventually, free_port
from prometheus_client import REGISTRY

from casegate_case_store.app import RELAY, init_app
from casegate_case_store.settings import Settings
from casegate_case_store.store.db import create_pool
from casegate_case_store.store.outbox import OutboxRelay, write_event
from casegate_shared.bus import Bus
from casegate_shared.dlq import list_parked
from casegate_shared.events import (
    CASE_REF_PATTERN,
    CaseRouted,
    Channel,
    Envelope,
    MessageReceived,
    NotificationOutcome,
    Priority,
    RouteDecided,
    RuleVerdict,
    Sender,
    derived_event_id,
    envelope,
    new_case_ref,
    utcnow,
)
from casegate_shared.settings import BusSettings


def consumed(queue: str, outcome: str = "ok") -> float:
    labels = {"queue": queue, "outcome": outcome}
    return REGISTRY.get_sample_value("casegate_bus_consumed_total", labels) or 0.0


async def handled(queue: str, before: float, count: int, outcome: str = "ok") -> None:
    async def done() -> bool:
        return consumed(queue, outcome) - before >= count

    await eventually(done)


class Observer:
    """An exclusive queue on the test's exchange: what the service really published."""

    def __init__(self, bus_settings: BusSettings, keys: list[str]) -> None:
        self.settings = bus_settings
        self.keys = keys
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def start(self) -> None:
        self.connection = await aio_pika.connect_robust(self.settings.amqp_url)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(
            self.settings.bus_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        for key in self.keys:
            await queue.bind(exchange, key)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await self.received.put(json.loads(message.body))

        await queue.consume(on_message, no_ack=True)

    async def take(self, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        return [await asyncio.wait_for(self.received.get(), timeout) for _ in range(count)]

    async def assert_quiet(self, seconds: float = 0.5) -> None:
        await asyncio.sleep(seconds)
        assert self.received.empty(), f"unexpected extra event: {self.received.get_nowait()}"

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()


@pytest.fixture
def settings(bus_settings: BusSettings, clean_db: str) -> Settings:
    return Settings(
        **bus_settings.model_dump(), database_url=clean_db, case_store_port=free_port()
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[web.Application]:
    app = await init_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.case_store_port).start()
    try:
        yield app
    finally:
        await runner.cleanup()


@pytest.fixture
async def observer(bus_settings: BusSettings) -> AsyncIterator[Observer]:
    obs = Observer(bus_settings, ["case.opened", "case.routed"])
    await obs.start()
    yield obs
    await obs.close()


@pytest.fixture
async def service(settings: Settings, observer: Observer) -> AsyncIterator[web.Application]:
    async with running(settings) as app:
        yield app


@pytest.fixture
async def db(clean_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_db)
    yield conn
    await conn.close()


def message(
    dedupe_key: str | None = None,
    *,
    email: str = "Jane.Doe@Example.com",
    case_ref: str | None = None,
    promised: str | None = None,
    body: str = "My printer is on fire.",
) -> Envelope[MessageReceived]:
    payload = MessageReceived(
        channel=Channel.WEBFORM,
        dedupe_key=dedupe_key or f"webform:{uuid.uuid4()}",
        sender=Sender(name="Jane Doe", email=email),
        subject="Printer",
        body=body,
        received_at=utcnow(),
        case_ref=case_ref,
        new_case_ref=promised or new_case_ref(),
    )
    return envelope(payload, source="intake", routing_key="message.received.webform")


async def open_case(publisher: Bus, observer: Observer, **kwargs: Any) -> dict[str, Any]:
    await publisher.publish(message(**kwargs))
    (opened,) = await observer.take()
    assert opened["type"] == "case.opened"
    return opened


def route_decision(ref: str, team: str = "billing") -> Envelope[RouteDecided]:
    payload = RouteDecided(
        ref=ref,
        team=team,
        priority=Priority.P2,
        rule="invoice-words",
        explanation=[RuleVerdict(rule="invoice-words", matched=True, reason="says invoice")],
    )
    return envelope(payload, source="router", subject=ref, correlation_id="corr-route")


async def test_a_message_delivered_twice_opens_one_case_and_announces_it_once(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    first = message("webform:dup", promised="CS-7K3M9Q")
    same_key_new_id = message("webform:dup", promised="CS-8P4N2R")
    before = consumed("case-store.inbound")

    await asyncio.gather(
        publisher.publish(first), publisher.publish(first), publisher.publish(same_key_new_id)
    )
    await handled("case-store.inbound", before, 3)

    assert await db.fetchval("SELECT count(*) FROM cases") == 1
    (opened,) = await observer.take()
    await observer.assert_quiet()
    assert opened["subject"] == opened["data"]["ref"] == "CS-7K3M9Q"
    assert opened["id"] == derived_event_id("case.opened", "CS-7K3M9Q")
    assert opened["correlationid"] == first.correlationid
    assert opened["source"] == "case-store"
    assert opened["data"]["customer"]["email"] == "jane.doe@example.com"
    assert (opened["data"]["status"], opened["data"]["priority"]) == ("new", "P3")

    entries = await db.fetch("SELECT kind, actor, visibility, body FROM timeline_entries")
    assert [tuple(e) for e in entries] == [
        ("message_in", "customer", "public", "My printer is on fire.")
    ]
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_the_relay_publishes_what_was_committed_before_it_started(
    settings: Settings, observer: Observer, db: asyncpg.Connection
) -> None:
    events = [
        envelope(
            CaseRouted(ref=f"CS-22222{i}", team="t", priority=Priority.P1, rule="r"),
            source="case-store",
            correlation_id=f"corr-{i}",
        )
        for i in range(2, 5)
    ]
    async with db.transaction():
        for event in events:
            await write_event(db, event)
    rolled_back = envelope(
        CaseRouted(ref="CS-999999", team="t", priority=Priority.P1, rule="r"), source="case-store"
    )
    with pytest.raises(RuntimeError, match="boom"):
        async with db.transaction():
            await write_event(db, rolled_back)
            raise RuntimeError("boom")
    assert await db.fetchval("SELECT count(*) FROM outbox") == 3

    async with running(settings):
        got = await observer.take(3)
        await observer.assert_quiet()
        assert {(e["id"], e["correlationid"]) for e in got} == {
            (e.id, e.correlationid) for e in events
        }

        async def drained() -> bool:
            return await db.fetchval("SELECT count(*) FROM outbox") == 0

        await eventually(drained)


async def test_write_event_refuses_to_run_outside_a_transaction(db: asyncpg.Connection) -> None:
    event = envelope(
        CaseRouted(ref="CS-222222", team="t", priority=Priority.P1, rule="r"), source="x"
    )
    with pytest.raises(RuntimeError, match="transaction"):
        await write_event(db, event)


async def test_a_route_decision_applies_once_and_announces_case_routed_once(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    ref = (await open_case(publisher, observer))["data"]["ref"]
    decision = route_decision(ref)
    before = consumed("case-store.decisions")

    await asyncio.gather(publisher.publish(decision), publisher.publish(decision))
    await handled("case-store.decisions", before, 2)

    case = await db.fetchrow(
        "SELECT team, priority, status, routed_by_rule FROM cases WHERE ref = $1", ref
    )
    assert tuple(case) == ("billing", "P2", "open", "invoice-words")
    routed = await db.fetch(
        "SELECT visibility, body, data, correlation_id FROM timeline_entries WHERE kind = 'routed'"
    )
    assert len(routed) == 1
    assert routed[0]["visibility"] == "internal"
    assert "billing" in routed[0]["body"] and "P2" in routed[0]["body"]
    assert json.loads(routed[0]["data"])["explanation"][0]["reason"] == "says invoice"
    assert routed[0]["correlation_id"] == "corr-route"

    (event,) = await observer.take()
    await observer.assert_quiet()
    assert event["type"] == "case.routed"
    assert event["id"] == derived_event_id("case.routed", decision.id)
    snapshot = event["data"].pop("case")
    assert event["data"] == {
        "ref": ref,
        "team": "billing",
        "priority": "P2",
        "rule": "invoice-words",
    }
    assert (snapshot["ref"], snapshot["team"], snapshot["status"]) == (ref, "billing", "open")
    assert event["correlationid"] == "corr-route"


async def test_a_route_decision_for_an_unknown_case_is_parked(
    service: web.Application, publisher: Bus, db: asyncpg.Connection
) -> None:
    decision = route_decision("CS-ZZZZZZ")
    await publisher.publish(decision)

    async def parked() -> bool:
        found = await list_parked(publisher, ["case-store.decisions"])
        return any(p.message_id == decision.id for p in found)

    await eventually(parked)
    (p,) = await list_parked(publisher, ["case-store.decisions"])
    assert p.error is not None and "no case with reference CS-ZZZZZZ" in p.error
    # The rejected transaction left no trace, so a replay after a fix can still apply it.
    assert await db.fetchval("SELECT count(*) FROM inbox WHERE consumer = 'decisions'") == 0


async def test_notification_outcomes_are_noted_on_the_case_with_a_masked_address(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    ref = (await open_case(publisher, observer))["data"]["ref"]
    sent = envelope(
        NotificationOutcome(
            ref=ref,
            notification_key="ack:1",
            channel=Channel.EMAIL,
            recipient="jane.doe@example.com",
            template="acknowledgement",
            provider="smtp",
            outcome="sent",
        ),
        source="notifier",
        subject=ref,
        routing_key="notification.sent",
    )
    unknown = envelope(
        sent.data.model_copy(update={"ref": "CS-ZZZZZZ"}),
        source="notifier",
        routing_key="notification.sent",
    )
    before = consumed("case-store.outcomes")
    await asyncio.gather(*(publisher.publish(e) for e in (sent, sent, unknown)))
    await handled("case-store.outcomes", before, 2)

    rows = await db.fetch(
        "SELECT visibility, body FROM timeline_entries WHERE kind = 'notification'"
    )
    assert [tuple(r) for r in rows] == [
        ("internal", "acknowledgement sent by email to j***@example.com")
    ]

    async def parked() -> bool:
        found = await list_parked(publisher, ["case-store.outcomes"])
        return [p.message_id for p in found] == [unknown.id]

    await eventually(parked)


async def test_a_reply_naming_the_customers_case_joins_it_and_anothers_does_not(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    ref = (await open_case(publisher, observer))["data"]["ref"]
    before = consumed("case-store.inbound")

    reply = message(email="JANE.DOE@example.com", case_ref=ref.lower(), body="Still burning")
    await publisher.publish(reply)
    await handled("case-store.inbound", before, 1)
    await observer.assert_quiet()
    assert await db.fetchval("SELECT count(*) FROM cases") == 1
    bodies = await db.fetch("SELECT body FROM timeline_entries ORDER BY id")
    assert [b["body"] for b in bodies] == ["My printer is on fire.", "Still burning"]

    # Someone else naming Jane's reference gets a case of their own, not a look at hers.
    other = await open_case(publisher, observer, email="mallory@example.net", case_ref=ref)
    assert other["data"]["ref"] != ref
    assert other["data"]["customer"]["email"] == "mallory@example.net"
    assert await db.fetchval("SELECT count(*) FROM cases") == 2
    assert await db.fetchval("SELECT count(*) FROM customers") == 2


async def test_a_promised_reference_already_taken_gets_a_fresh_one(
    service: web.Application, publisher: Bus, observer: Observer
) -> None:
    first = await open_case(publisher, observer, promised="CS-7K3M9Q")
    second = await open_case(publisher, observer, email="bob@example.org", promised="CS-7K3M9Q")
    assert first["data"]["ref"] == "CS-7K3M9Q"
    assert second["data"]["ref"] != "CS-7K3M9Q"
    assert re.fullmatch(CASE_REF_PATTERN, second["data"]["ref"])


async def test_simultaneous_first_messages_from_one_person_make_one_customer(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    before_ok = consumed("case-store.inbound")
    before_retried = consumed("case-store.inbound", "retried")
    await asyncio.gather(*(publisher.publish(message(email="new@example.com")) for _ in range(12)))
    await handled("case-store.inbound", before_ok, 12)

    assert await db.fetchval("SELECT count(*) FROM customers") == 1
    assert await db.fetchval("SELECT count(*) FROM customer_identities") == 1
    assert await db.fetchval("SELECT count(DISTINCT customer_id) FROM cases") == 1
    assert await db.fetchval("SELECT count(*) FROM cases") == 12
    # The race is settled inside the transaction, not by the bus retrying a failure.
    assert consumed("case-store.inbound", "retried") == before_retried
    assert len(await observer.take(12)) == 12


async def test_readiness_reports_each_dependency(
    service: web.Application, settings: Settings
) -> None:
    base = f"http://127.0.0.1:{settings.case_store_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == ["bus", "database", "outbox", "sla"]
        async with http.get(f"{base}/metrics") as resp:
            assert "casegate_outbox_lag_seconds" in await resp.text()

        await service[RELAY].stop()
        async with http.get(f"{base}/readyz") as resp:
            assert resp.status == 503
            assert set((await resp.json())["failures"]) == {"outbox"}


# --- the relay on its own ---------------------------------------------------------------


@pytest.fixture
async def pool(clean_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(clean_db, max_size=4)
    yield p
    await p.close()


def routed_event(key: str = "case.routed") -> Envelope[Any]:
    payload = CaseRouted(ref=new_case_ref(), team="t", priority=Priority.P3, rule="r")
    return envelope(payload, source="case-store", routing_key=key)


async def write(pool: asyncpg.Pool, events: list[Envelope[Any]]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for event in events:
            await write_event(conn, event)


async def test_an_unroutable_event_is_held_back_without_blocking_the_rest(
    pool: asyncpg.Pool, publisher: Bus, observer: Observer
) -> None:
    stray = routed_event("case.nobody_listens")
    good = [routed_event(), routed_event()]
    await write(pool, [stray, *good])
    relay = OutboxRelay(pool, publisher, batch=10)

    done = await relay.relay_once()
    assert (done.published, done.unroutable, done.failed) == (2, 1, 0)
    assert {e["id"] for e in await observer.take(2)} == {e.id for e in good}
    row = await pool.fetchrow(
        "SELECT event_id, attempts, last_error, next_attempt_at > now() AS later FROM outbox"
    )
    assert str(row["event_id"]) == stray.id
    assert row["attempts"] == 1 and row["later"]
    assert "case.nobody_listens" in row["last_error"]
    assert (await relay.relay_once()).selected == 0  # it waits its turn


async def test_events_stay_in_the_outbox_while_the_broker_does_not_confirm(
    pool: asyncpg.Pool, bus_settings: BusSettings, publisher: Bus, observer: Observer
) -> None:
    events = [routed_event() for _ in range(3)]
    await write(pool, events)
    gone = Bus(bus_settings, source="case-store")
    await gone.connect()
    await gone.close()

    done = await OutboxRelay(pool, gone).relay_once()
    assert (done.selected, done.failed, done.published) == (3, 3, 0)
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE attempts = 0") == 3

    assert (await OutboxRelay(pool, publisher).relay_once()).published == 3
    assert {e["id"] for e in await observer.take(3)} == {e.id for e in events}


async def test_two_relays_share_the_outbox_and_publish_each_event_once(
    pool: asyncpg.Pool, publisher: Bus, observer: Observer
) -> None:
    events = [routed_event() for _ in range(300)]
    await write(pool, events)
    relays = [OutboxRelay(pool, publisher, batch=40) for _ in range(2)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while (done := await relay.relay_once()).selected:
            total += done.published
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(counts) == 300 and all(counts), counts
    got = [e["id"] for e in await observer.take(300)]
    await observer.assert_quiet()
    assert sorted(got) == sorted(e.id for e in events)


async def test_a_relay_skips_rows_another_relay_is_publishing(
    pool: asyncpg.Pool, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    events = [routed_event() for _ in range(30)]
    await write(pool, events)
    relay = OutboxRelay(pool, publisher, batch=100)
    async with db.transaction():  # another replica, mid-pass on the oldest ten
        await db.fetch("SELECT id FROM outbox ORDER BY id LIMIT 10 FOR UPDATE")
        done = await asyncio.wait_for(relay.relay_once(), timeout=5)
        assert done.published == 20
    assert (await relay.relay_once()).published == 10
    assert sorted(e["id"] for e in await observer.take(30)) == sorted(e.id for e in events)
