"""Exactly one delivery per (event, recipient, channel) with three notifier replicas consuming
while the same 500 events are published twice, counted where the mail lands: a real SMTP
server (aiosmtpd)."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from prometheus_client import REGISTRY

from casegate_shared.bus import Bus
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.integration.test_notifier_delivery import notifier, outcomes, settings_for
from tests.integration.test_notifier_smtp import Mailbox, case_opened, smtp_server

EVENTS = 500


@pytest.mark.timeout(300)
async def test_three_replicas_and_every_event_twice_deliver_each_notification_once(
    bus_settings: BusSettings, redis_url: str, publisher: Bus
) -> None:
    mailbox, port = Mailbox(), free_port()
    settings = settings_for(bus_settings, redis_url, smtp_port=port)
    events = [case_opened(email=f"customer{i}@example.com") for i in range(EVENTS)]
    limit = asyncio.Semaphore(64)

    async def publish(event: object) -> None:
        async with limit:
            await publisher.publish(event)  # type: ignore[arg-type]

    async with (
        smtp_server(mailbox, port),
        outcomes(bus_settings) as seen,
        notifier(settings),
        notifier(settings),
        notifier(settings),
    ):
        # Both copies of each event are in flight at once, interleaved across the replicas.
        await asyncio.gather(*(publish(e) for e in events), *(publish(e) for e in reversed(events)))

        async def every_copy_answered() -> bool:
            return len(seen) >= 2 * EVENTS

        try:
            await eventually(every_copy_answered, timeout=180)
        except AssertionError:
            labels = {"provider": "smtp", "to": "open"}
            name = "casegate_notifier_breaker_transitions_total"
            opened = REGISTRY.get_sample_value(name, labels)
            raise AssertionError(
                f"{len(seen)} outcomes for {2 * EVENTS} deliveries, {len(mailbox.received)} mails;"
                f" breaker opened {opened} times"
            ) from None
        await asyncio.sleep(1.0)  # room for a late duplicate to land, if there were one
    per_recipient = Counter(r for rcpt_tos, _ in mailbox.received for r in rcpt_tos)
    assert len(mailbox.received) == EVENTS
    assert set(per_recipient) == {f"customer{i}@example.com" for i in range(EVENTS)}
    assert set(per_recipient.values()) == {1}
    assert len(seen) == 2 * EVENTS  # each copy answered once, with the same outcome event
    assert len({o["id"] for o in seen}) == EVENTS
    assert {o["type"] for o in seen} == {"notification.sent"}
