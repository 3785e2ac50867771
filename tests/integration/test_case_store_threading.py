"""Threading rules that are configuration: the same-sender rule for email without headers or
a token, on and off."""

from __future__ import annotations

import asyncpg
import pytest
from casegate_case_store.settings import Settings
from casegate_shared.bus import Bus
from casegate_shared.events import (
    Channel,
    EmailHeaders,
    MessageReceived,
    Sender,
    envelope,
    utcnow,
)
from casegate_shared.settings import BusSettings

from tests.conftest import eventually, free_port
from tests.integration.test_case_store_service import running


def email(n: int, sender: str = "kim@example.com") -> object:
    msg = MessageReceived(
        channel=Channel.EMAIL, dedupe_key=f"email:mid:<m{n}@example.com>",
        sender=Sender(email=sender), subject=f"Question {n}", body=f"Another thing, {n}.",
        received_at=utcnow(), email=EmailHeaders(message_id=f"<m{n}@example.com>"),
    )
    return envelope(msg, source="intake", routing_key="message.received.email")


@pytest.mark.parametrize(("hours", "cases"), [(0, 2), (2, 1)])
async def test_same_sender_rule_for_email_is_configurable(
    bus_settings: BusSettings, clean_db: str, publisher: Bus, hours: float, cases: int
) -> None:
    settings = Settings(**bus_settings.model_dump(), database_url=clean_db,
                        case_store_port=free_port(), thread_same_sender_hours=hours)
    db = await asyncpg.connect(clean_db)
    try:
        async with running(settings):
            await publisher.publish(email(1))

            async def first_in() -> bool:
                return await db.fetchval("SELECT count(*) FROM cases") == 1

            await eventually(first_in)
            await publisher.publish(email(2))
            await publisher.publish(email(3, sender="someone.else@example.com"))

            async def all_in() -> bool:
                return await db.fetchval(
                    "SELECT count(*) FROM timeline_entries WHERE kind = 'message_in'") == 3

            await eventually(all_in)
        kim = await db.fetchval(
            "SELECT count(DISTINCT c.id) FROM cases c JOIN customer_identities i "
            "ON i.customer_id = c.customer_id WHERE i.value = 'kim@example.com'")
        assert kim == cases
        if cases == 1:
            why = await db.fetchval("SELECT data->>'joined_by' FROM timeline_entries "
                                    "WHERE data->>'message_id' = '<m2@example.com>'")
            assert why.startswith("sender matched")
        # Another sender's mail never joins Kim's case, whatever the rule says.
        assert await db.fetchval("SELECT count(*) FROM cases") == cases + 1
    finally:
        await db.close()
