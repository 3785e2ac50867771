"""The case snapshot events carry, made in the statements that change the case instead of
being read back: what `case.opened` and `case.routed` announce must be exactly what the
database holds once they commit, also when they waited for a lock another transaction held
while it changed what the snapshot shows. Also: a case's Message-IDs are found through an index, and
a notification outcome applies once, in one statement, and never for a case that is not
there. Real PostgreSQL; the handlers are called directly, their events read from the outbox.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from casegate_case_store import handlers
from casegate_case_store.domain import timeline
from casegate_case_store.inbound import ThreadingRules, receive
from casegate_case_store.store import cases as repo
from casegate_case_store.store.db import create_pool
from casegate_case_store.store.snapshot import _SNAPSHOT, load_snapshot
from casegate_shared.events import (
    Channel,
    EmailHeaders,
    Envelope,
    MessageKind,
    MessageReceived,
    NotificationOutcome,
    Priority,
    RouteDecided,
    RuleVerdict,
    Sender,
    envelope,
    new_case_ref,
    utcnow,
)

THREADING = ThreadingRules(reopen_window=timedelta(days=14))


@pytest.fixture
async def pool(clean_db: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(clean_db, 2)
    yield pool
    await pool.close()


def inbound(sender: Sender, *, channel: Channel = Channel.WEBFORM,
            message_id: str | None = None) -> Envelope[MessageReceived]:
    payload = MessageReceived(
        channel=channel,
        dedupe_key=f"{channel.value}:{uuid.uuid4()}",
        sender=sender,
        subject="Refund",
        body="I was charged twice.",
        received_at=utcnow(),
        new_case_ref=new_case_ref(),
        email=EmailHeaders(message_id=message_id) if message_id else None,
    )
    return envelope(payload, source="intake", routing_key=f"message.received.{channel.value}")


async def queued(pool: asyncpg.Pool, routing_key: str) -> dict[str, Any]:
    """The one event of this type waiting in the outbox (no relay runs here)."""
    (row,) = await pool.fetch("SELECT body FROM outbox WHERE routing_key = $1", routing_key)
    event: dict[str, Any] = json.loads(row["body"])
    return event


async def stored_snapshot(pool: asyncpg.Pool, ref: str, **extra: Any) -> dict[str, Any]:
    async with pool.acquire() as conn:
        case_id = await conn.fetchval("SELECT id FROM cases WHERE ref = $1", ref)
        snapshot = await load_snapshot(conn, case_id)
    return snapshot.model_copy(update=extra).model_dump(mode="json")


async def test_a_new_customers_case_announces_what_the_database_holds(
    pool: asyncpg.Pool,
) -> None:
    event = inbound(Sender(name="Ada", email="Ada@Example.com", phone="+44 20 7946 0000"),
                    channel=Channel.EMAIL, message_id="<first@mail.example>")
    await receive(pool, event, THREADING)

    opened = (await queued(pool, "case.opened"))["data"]
    announced = opened["case"]
    assert announced["tracking_token"]
    assert announced["references"] == ["<first@mail.example>"]
    assert (announced["customer"]["email"], announced["customer"]["phone"]) == (
        "ada@example.com", "+442079460000")
    assert announced == await stored_snapshot(
        pool, opened["ref"], tracking_token=announced["tracking_token"])
    assert datetime.fromisoformat(opened["opened_at"]) == await pool.fetchval(
        "SELECT created_at FROM cases WHERE ref = $1", opened["ref"])


async def test_a_known_customers_preferences_and_new_identity_are_announced(
    pool: asyncpg.Pool,
) -> None:
    customer_id = await pool.fetchval(
        "INSERT INTO customers (name, language, timezone, quiet_start, quiet_end, tier, tags, "
        "fallback, preferred_channel) VALUES (NULL, 'de', 'Europe/Berlin', '21:00', '07:00', "
        "'gold', '{vip}', '{sms}', 'email') RETURNING id"
    )
    await pool.execute(
        "INSERT INTO customer_identities (customer_id, kind, value, bouncing_at) "
        "VALUES ($1, 'email', 'bo@example.com', now())", customer_id,
    )
    # The same person writes again, naming themselves and their number for the first time.
    await receive(pool, inbound(Sender(name="Bo", email="bo@example.com", phone="+4930999999")),
                  THREADING)

    opened = (await queued(pool, "case.opened"))["data"]
    announced = opened["case"]
    contact = announced["customer"]
    assert contact["customer_id"] == customer_id == opened["customer"]["id"]
    assert (contact["name"], contact["language"], contact["quiet_hours"]) == (
        "Bo", "de", ["21:00", "07:00"])
    assert (contact["phone"], contact["bouncing"]) == ("+4930999999", ["bo@example.com"])
    assert announced == await stored_snapshot(
        pool, opened["ref"], tracking_token=announced["tracking_token"])
    assert await pool.fetchval(
        "SELECT count(*) FROM customer_identities WHERE customer_id = $1", customer_id) == 2


async def test_a_route_decision_announces_what_the_database_holds(pool: asyncpg.Pool) -> None:
    await receive(pool, inbound(Sender(name="Cy", email="cy@example.com")), THREADING)
    ref = (await queued(pool, "case.opened"))["data"]["ref"]
    now = utcnow()
    decision = RouteDecided(
        ref=ref, team="billing", priority=Priority.P2, rule="refunds", tags=["refund", "money"],
        explanation=[RuleVerdict(rule="refunds", matched=True, reason="says refund")],
        sla_policy="standard", region="eu", first_response_warn_at=now + timedelta(hours=3),
        first_response_due=now + timedelta(hours=4), resolution_warn_at=now + timedelta(days=1),
        resolution_due=now + timedelta(days=2),
    )
    await handlers.apply_route_decision(pool, envelope(decision, source="router"))

    announced = (await queued(pool, "case.routed"))["data"]["case"]
    assert (announced["team"], announced["priority"], announced["status"]) == (
        "billing", "P2", "open")
    assert sorted(announced["tags"]) == ["money", "refund"]
    assert announced == await stored_snapshot(pool, ref)
    row = await pool.fetchrow(
        "SELECT sla_policy, region, resolution_warn_at FROM cases WHERE ref = $1", ref)
    assert tuple(row) == ("standard", "eu", decision.resolution_warn_at)


@asynccontextmanager
async def holding(url: str, *statements: tuple[str, Any]) -> AsyncIterator[None]:
    """Another transaction that runs `statements` and commits when the block ends, holding
    their row locks meanwhile."""
    other = await asyncpg.connect(url)
    try:
        async with other.transaction():
            for sql, *args in statements:
                await other.execute(sql, *args)
            yield
    finally:
        await other.close()


async def waits_then_finishes(
    work: Awaitable[None], holder: AbstractAsyncContextManager[None]
) -> None:
    async with holder:
        task = asyncio.ensure_future(work)
        await asyncio.sleep(0.3)
        assert not task.done(), "the work should wait for the other transaction's lock"
    await task


async def test_a_route_decision_that_waited_for_the_case_announces_what_was_committed(
    pool: asyncpg.Pool, clean_db: str
) -> None:
    await receive(pool, inbound(Sender(name="Cy", email="cy@example.com")), THREADING)
    ref = (await queued(pool, "case.opened"))["data"]["ref"]
    now = utcnow()
    decision = RouteDecided(
        ref=ref, team="billing", priority=Priority.P2, rule="r", tags=[],
        explanation=[RuleVerdict(rule="r", matched=True, reason="x")],
        first_response_warn_at=now + timedelta(hours=3),
        first_response_due=now + timedelta(hours=4),
        resolution_warn_at=now + timedelta(days=1), resolution_due=now + timedelta(days=2))
    # The customer's next email joins the case while the decision waits for it.
    joining = holding(
        clean_db, ("SELECT 1 FROM cases WHERE ref = $1 FOR UPDATE", ref),
        ("INSERT INTO case_message_ids (message_id, case_id, direction) "
         "SELECT '<second@mail>', id, 'in' FROM cases WHERE ref = $1", ref))
    await waits_then_finishes(
        handlers.apply_route_decision(pool, envelope(decision, source="router")), joining)
    announced = (await queued(pool, "case.routed"))["data"]["case"]
    assert announced["last_customer_message_id"] == "<second@mail>"
    assert announced == await stored_snapshot(pool, ref)


async def test_a_message_that_waited_for_its_customer_announces_their_opt_out(
    pool: asyncpg.Pool, clean_db: str
) -> None:
    cid = await pool.fetchval("INSERT INTO customers (name) VALUES ('Bo') RETURNING id")
    await pool.execute("INSERT INTO customer_identities (customer_id, kind, value) VALUES "
                       "($1, 'email', 'bo@example.com'), ($1, 'phone', '+4930999999')", cid)
    # A STOP from the same person is being applied: their row touched, the number opted out.
    stopping = holding(
        clean_db, ("UPDATE customers SET last_channel = 'sms' WHERE id = $1", cid),
        ("UPDATE customer_identities SET opted_out_at = now() WHERE value = '+4930999999'",))
    await waits_then_finishes(
        receive(pool, inbound(Sender(email="bo@example.com"), channel=Channel.EMAIL), THREADING),
        stopping)
    opened = (await queued(pool, "case.opened"))["data"]
    announced = opened["case"]
    assert announced["customer"]["opted_out"] == ["sms"]  # so no acknowledgement by SMS
    assert announced == await stored_snapshot(
        pool, opened["ref"], tracking_token=announced["tracking_token"])


async def test_a_cases_message_ids_are_found_through_an_index(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # With sequential scans priced out, the planner takes any index it has; the primary
        # key (message_id, case_id) would be read whole to find one case's rows.
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {_SNAPSHOT}", 1))
    assert "case_message_ids" in plan
    assert "Seq Scan on case_message_ids" not in plan
    assert "case_message_ids_pkey" not in plan


async def test_an_outcome_applies_once_and_never_to_a_missing_case(pool: asyncpg.Pool) -> None:
    await receive(pool, inbound(Sender(email="di@example.com")), THREADING)
    ref = (await queued(pool, "case.opened"))["data"]["ref"]
    outcome = NotificationOutcome(
        ref=ref, notification_key="ack:di", channel=Channel.EMAIL, recipient="di@example.com",
        template="case_opened", provider="smtp", outcome="sent",
        provider_message_id="<ack-1@casegate.localhost>",
    )
    entry = timeline.notification(outcome)

    async def record(o: NotificationOutcome, key: str) -> bool | None:
        return await repo.record_outcome(pool, "outcomes", key, o, entry, "corr")

    assert await record(outcome, "event-1") is True
    assert await record(outcome, "event-1") is False
    missing = outcome.model_copy(update={"ref": "CS-ZZZZZZ"})
    assert await record(missing, "event-2") is None

    assert await pool.fetchval(
        "SELECT count(*) FROM timeline_entries WHERE kind = 'notification'") == 1
    assert await pool.fetchval("SELECT provider_message_id FROM deliveries") == (
        "<ack-1@casegate.localhost>")
    assert await pool.fetchval(
        "SELECT direction FROM case_message_ids WHERE message_id = $1",
        "<ack-1@casegate.localhost>") == "out"
    # Nothing of the missing case's outcome stayed, not even its claim: a replay can apply it.
    assert await pool.fetchval("SELECT count(*) FROM inbox WHERE key = 'event-2'") == 0


async def test_an_auto_reply_neither_creates_nor_touches_a_customer(pool: asyncpg.Pool) -> None:
    def auto_reply(email: str) -> Envelope[MessageReceived]:
        event = inbound(Sender(name="Away", email=email), channel=Channel.EMAIL)
        return envelope(event.data.model_copy(update={"kind": MessageKind.AUTO_REPLY}),
                        source="intake", routing_key="message.received.email")

    await receive(pool, auto_reply("stranger@example.com"), THREADING)
    assert await pool.fetchval("SELECT count(*) FROM customers") == 0

    await receive(pool, inbound(Sender(email="ed@example.com")), THREADING)  # web form
    await receive(pool, auto_reply("ed@example.com"), THREADING)
    assert await pool.fetchrow("SELECT name, last_channel FROM customers") == (None, "webform")
    assert await pool.fetchval("SELECT count(*) FROM inbox") == 3


async def test_a_change_announces_what_the_database_holds(pool: asyncpg.Pool) -> None:
    await receive(pool, inbound(Sender(email="fay@example.com")), THREADING)
    ref = (await queued(pool, "case.opened"))["data"]["ref"]
    reply = inbound(Sender(email="fay@example.com"), channel=Channel.EMAIL,
                    message_id="<reply@mail.example>")
    reply = envelope(reply.data.model_copy(update={"case_ref": ref, "body": "zanzibar"}),
                     source="intake", routing_key="message.received.email")
    await receive(pool, reply, THREADING)

    added = (await queued(pool, "case.message_added"))["data"]
    assert added["entry_id"] == await pool.fetchval(
        "SELECT max(id) FROM timeline_entries WHERE kind = 'message_in'")
    assert added["case"]["last_customer_message_id"] == "<reply@mail.example>"
    assert added["case"] == await stored_snapshot(pool, ref)
    # The entry's own trigger still indexes the reply for search, in the same statement.
    assert await pool.fetchval(
        "SELECT search @@ to_tsquery('simple', 'zanzibar') FROM cases WHERE ref = $1", ref)
