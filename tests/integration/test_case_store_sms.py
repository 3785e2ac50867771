"""SMS keywords and delivery reports in case-store: STOP suppresses the number (and opens
nothing), START lifts it, and a provider's status callback lands on the case and its
delivery record."""

from __future__ import annotations

import asyncio

import asyncpg
from aiohttp import web
from tests.conftest import eventually
from tests.integration.case_store_fixtures import db, observer, service, settings  # noqa: F401
from tests.integration.test_case_store_service import Observer

from casegate_case_store.domain.timeline import EntryKind, TimelineEntry, Visibility
from casegate_case_store.store.changes import record_contact_change
from casegate_case_store.store.db import create_pool
from casegate_shared.bus import Bus
from casegate_shared.events import (
    Channel, DeliveryUpdated, MessageKind, MessageReceived, NotificationOutcome, Sender,
    envelope, utcnow,
)

PHONE = "+15550002222"


def sms(sid: str, body: str, kind: MessageKind = MessageKind.MESSAGE) -> object:
    msg = MessageReceived(channel=Channel.SMS, dedupe_key=f"twilio:{sid}",
                          sender=Sender(phone=PHONE), subject="", body=body,
                          received_at=utcnow(), kind=kind)
    return envelope(msg, source="intake", routing_key="message.received.sms")


async def test_stop_suppresses_the_number_without_opening_a_case_and_start_lifts_it(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    await publisher.publish(sms("SM1", "my parcel is late"))
    (opened,) = await observer.take()
    assert opened["data"]["case"]["customer"]["opted_out"] == []
    await publisher.publish(sms("SM2", "STOP", MessageKind.OPT_OUT))

    async def opted_out() -> bool:
        return await db.fetchval("SELECT opted_out_at IS NOT NULL FROM customer_identities "
                                 "WHERE value = $1", PHONE)

    # No case opens and nothing is acknowledged; the open case hears that SMS is off, so its
    # Slack card stops offering a reply by SMS.
    (changed,) = await observer.take()
    assert changed["type"] == "case.contact_changed"
    assert changed["data"]["ref"] == opened["data"]["ref"]
    assert changed["data"]["case"]["customer"]["opted_out"] == ["sms"]
    assert await opted_out()
    await observer.assert_quiet()
    assert await db.fetchval("SELECT count(*) FROM cases") == 1
    note = await db.fetchval("SELECT body FROM timeline_entries WHERE kind = 'delivery'")
    assert "stop keyword" in note
    await publisher.publish(sms("SM3", "START", MessageKind.OPT_IN))
    (changed,) = await observer.take()
    assert changed["type"] == "case.contact_changed"
    assert changed["data"]["case"]["customer"]["opted_out"] == []
    assert not await opted_out()
    await publisher.publish(sms("SM4", "HELP", MessageKind.HELP))  # reachability unchanged

    async def helped() -> bool:
        return await db.fetchval("SELECT count(*) FROM timeline_entries "
                                 "WHERE kind = 'delivery'") == 3

    await eventually(helped)
    await observer.assert_quiet()


async def test_a_status_callback_lands_on_the_case_and_its_delivery_record(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    await publisher.publish(sms("SM9", "hello"))
    (opened,) = await observer.take()
    ref = opened["data"]["ref"]
    sent = NotificationOutcome(ref=ref, notification_key="k1", channel=Channel.SMS,
                               recipient=PHONE, template="case_opened", provider="twilio",
                               outcome="sent", provider_message_id="SMout1")
    await publisher.publish(envelope(sent, source="notifier", routing_key="notification.sent"))
    update = DeliveryUpdated(ref=ref, notification_key="k1", provider="twilio",
                             provider_message_id="SMout1", status="undelivered",
                             error_code="30003")

    async def recorded() -> bool:
        return await db.fetchval("SELECT count(*) FROM deliveries") == 1

    await eventually(recorded)
    await publisher.publish(envelope(update, source="intake", subject=ref))

    async def updated() -> bool:
        return await db.fetchval("SELECT status FROM deliveries") == "undelivered"

    await eventually(updated)
    body = await db.fetchval("SELECT body FROM timeline_entries WHERE kind = 'delivery'")
    assert body == "twilio reports the message undelivered (error 30003)"


async def test_the_team_card_post_becomes_the_cases_slack_thread(
    service: web.Application, publisher: Bus, observer: Observer, db: asyncpg.Connection
) -> None:
    await publisher.publish(sms("SM20", "hello"))
    (opened,) = await observer.take()
    ref = opened["data"]["ref"]
    posts = [
        ("D0PERSON", "D0PERSON:1700000000.000100"),  # a DM to someone: not the case thread
        ("C0BILLING", "C0BILLING:1700000001.000200"),  # the team card
        ("C0BILLING", "C0BILLING:1700000009.000900"),  # a later post does not move it
    ]
    for n, (recipient, mid) in enumerate(posts):
        post = NotificationOutcome(ref=ref, notification_key=f"slack{n}", channel=Channel.SLACK,
                                   recipient=recipient, template="case_routed",
                                   provider="slack", outcome="sent", provider_message_id=mid)
        await publisher.publish(envelope(post, source="notifier",
                                         routing_key="notification.sent"))

        async def recorded(count: int = n + 1) -> bool:  # one at a time: order matters here
            return await db.fetchval("SELECT count(*) FROM deliveries") == count

        await eventually(recorded)
    thread = await db.fetchval("SELECT slack_thread FROM cases WHERE ref = $1", ref)
    assert thread == "C0BILLING:1700000001.000200"


async def test_a_stop_and_a_merge_of_the_same_customers_cases_do_not_deadlock(
    clean_db: str,
) -> None:
    """A merge locks its two cases in id order; a STOP locks the customer's open cases to
    announce the change. Were the STOP to lock them newest first, the two would wait on each
    other in a circle and PostgreSQL would abort one."""
    setup = await asyncpg.connect(clean_db)
    cid = await setup.fetchval("INSERT INTO customers (name) VALUES ('Bo') RETURNING id")
    for ref in ("CS-OLDER2", "CS-NEWER2"):
        await setup.execute("INSERT INTO cases (ref, customer_id, channel, subject, status) "
                            "VALUES ($1, $2, 'sms', 's', 'open')", ref, cid)
    pool = await create_pool(clean_db, max_size=2)  # with case-store's jsonb codec
    merge, stop = await pool.acquire(), await pool.acquire()
    entry = TimelineEntry(EntryKind.DELIVERY, "customer", Visibility.INTERNAL, "stop", {})

    async def merging() -> None:
        async with merge.transaction():
            await merge.execute("SELECT 1 FROM cases WHERE ref = ANY($1::text[]) ORDER BY id "
                                "FOR UPDATE", ["CS-NEWER2", "CS-OLDER2"])
            await asyncio.sleep(0.3)

    async def stopping() -> list[str]:
        await asyncio.sleep(0.1)
        async with stop.transaction():
            return await record_contact_change(stop, cid, entry, "c")

    try:
        _, announced = await asyncio.wait_for(asyncio.gather(merging(), stopping()), 10)
    finally:
        await pool.release(merge)
        await pool.release(stop)
        await pool.close()
        await setup.close()
    assert announced == ["CS-OLDER2", "CS-NEWER2"]
