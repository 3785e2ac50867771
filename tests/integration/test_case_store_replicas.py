"""Two case-store replicas on one database and one queue while 1000 messages arrive (some of
them twice): every message ends up in exactly one case, and every outbox event reaches the
bus exactly once, with both relays racing for the rows."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import asyncpg
from tests.conftest import eventually, free_port
from tests.integration.test_case_store_service import Observer, running

from casegate_case_store.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import Channel, MessageReceived, Sender, envelope, utcnow
from casegate_shared.settings import BusSettings

MESSAGES = 1000
SENDERS = 150
REPEATED = 100


def sms(n: int) -> MessageReceived:
    # SMS threads on the sender's open case, so replicas race to open and join cases too.
    return MessageReceived(
        channel=Channel.SMS, dedupe_key=f"twilio:SM{n:032d}",
        sender=Sender(phone=f"+1555{n % SENDERS:07d}"), subject="", body=f"message {n}",
        received_at=utcnow(),
    )


async def test_two_replicas_apply_each_message_once_and_publish_each_event_once(
    bus_settings: BusSettings, clean_db: str, publisher: Bus
) -> None:
    observer = Observer(bus_settings, ["case.#"])
    await observer.start()
    base = dict(**bus_settings.model_dump(), database_url=clean_db, outbox_poll_s=0.2)
    one = Settings(**base, case_store_port=free_port())
    two = Settings(**base, case_store_port=free_port())
    db = await asyncpg.connect(clean_db)
    try:
        async with running(one), running(two):
            events = [envelope(sms(n), source="intake", routing_key="message.received.sms")
                      for n in range(MESSAGES)]
            again = [e.model_copy(update={"id": str(uuid.uuid4())}) for e in events[:REPEATED]]
            for batch in range(0, MESSAGES + REPEATED, 100):
                chunk = (events + again)[batch: batch + 100]
                await asyncio.gather(*(publisher.publish(e) for e in chunk))

            async def all_in() -> bool:
                count = await db.fetchval(
                    "SELECT count(*) FROM timeline_entries WHERE kind = 'message_in'"
                )
                pending = await db.fetchval("SELECT count(*) FROM outbox")
                return count == MESSAGES and pending == 0

            await eventually(all_in, timeout=90)
            await asyncio.sleep(1.0)  # a double publish would arrive by now
        keys = await db.fetch(
            "SELECT data->>'dedupe_key' AS key, count(DISTINCT case_id) AS cases "
            "FROM timeline_entries WHERE kind = 'message_in' GROUP BY 1"
        )
        assert len(keys) == MESSAGES and all(k["cases"] == 1 for k in keys)
        opened = await db.fetchval("SELECT count(*) FROM cases")
        received = []
        while not observer.received.empty():
            received.append(observer.received.get_nowait())
        ids = Counter(e["id"] for e in received)
        assert ids and max(ids.values()) == 1, ids.most_common(3)
        types = Counter(e["type"] for e in received)
        assert types["case.opened"] == opened
        assert types["case.opened"] + types["case.message_added"] == MESSAGES
    finally:
        await db.close()
        await observer.close()
