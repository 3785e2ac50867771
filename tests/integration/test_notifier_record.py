"""The notifier with case-store's PostgreSQL behind its Redis ledger: a delivery Redis forgot is
found in the delivery record and not sent again (case-store, the broker, Redis and PostgreSQL
all real; the acknowledgement, with the customer's tracking link, counted at the sandbox); the
record read as case-store writes it, read-only; an assignee who is no participant found among
case-store's users; a database that does not answer. The route loop's use of the record is in
tests/unit/test_notifier_record.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp import web
from redis.asyncio import Redis

from casegate_case_store.store import cases as repo
from casegate_notifier.adapters.case_records import CaseRecords
from casegate_notifier.app import DELIVERY
from casegate_notifier.domain.delivery import Claim, Failure, Recorded, RecordUnavailable
from casegate_notifier.domain.facts import AgentContact
from casegate_shared.bus import Bus
from casegate_shared.events import Channel, NotificationOutcome
from casegate_shared.settings import BusSettings
from tests.conftest import eventually, free_port
from tests.integration.case_store_fixtures import db, observer, service, settings  # noqa: F401
from tests.integration.test_case_store_service import Observer, message
from tests.integration.test_notifier_delivery import notifier, outcomes, sandbox_of, settings_for

PUBLIC_URL = "https://support.example.com"


async def ledger_state(redis_url: str, app: web.Application, key: str) -> str | None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        ledger = app[DELIVERY].ledger
        value: str | None = await redis.get(ledger.key(key))  # type: ignore[attr-defined]
        return value
    finally:
        await redis.aclose()


async def forget(redis_url: str, app: web.Application, key: str) -> None:
    """What a Redis restart without persistence, an eviction or the TTL does to a claim."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        assert await redis.delete(app[DELIVERY].ledger.key(key)) == 1  # type: ignore[attr-defined]
    finally:
        await redis.aclose()


async def test_a_delivery_redis_forgot_is_found_in_case_stores_record_and_not_sent_again(
    bus_settings: BusSettings,
    redis_url: str,
    clean_db: str,
    publisher: Bus,
    service: web.Application,  # noqa: F811  case-store itself, recording outcomes
    observer: Observer,  # noqa: F811
    db: asyncpg.Connection,  # noqa: F811
) -> None:
    config = settings_for(bus_settings, redis_url, database_url=clean_db, public_url=PUBLIC_URL)
    async with (
        outcomes(bus_settings) as seen,
        notifier(config) as app,
        sandbox_of(config) as sandbox,
    ):
        await publisher.publish(message(email="jane@example.com"))
        [opened] = await observer.take()
        assert opened["type"] == "case.opened"
        ref, token = opened["subject"], opened["data"]["case"]["tracking_token"]
        key = f"{opened['id']}/email/jane@example.com"

        async def recorded() -> bool:
            status = await db.fetchval(
                "SELECT status FROM deliveries WHERE notification_key = $1", key
            )
            return bool(status == "sent")

        await eventually(recorded)  # case-store took notification.sent into its record
        [mail] = await sandbox.messages(case_ref=ref, channel="email")
        assert f"{PUBLIC_URL}/track/{ref}?token={quote(token, safe='')}" in mail["body"]

        await forget(redis_url, app, key)
        await publisher.publish_raw(  # the same case.opened again, byte for byte
            "case.opened", json.dumps(opened).encode(),
            event_id=opened["id"], correlation_id=opened["correlationid"],
        )

        async def repeated() -> bool:
            return sum(o["data"]["notification_key"] == key for o in seen) >= 2

        await eventually(repeated)
        assert await ledger_state(redis_url, app, key) == "done"  # Redis knows again
        mails = await sandbox.messages(case_ref=ref, channel="email")
    assert len(mails) == 1  # sent once, although Redis had forgotten it
    ours = [o for o in seen if o["data"]["notification_key"] == key]
    assert {o["type"] for o in ours} == {"notification.sent"} and len({o["id"] for o in ours}) == 1


@pytest.fixture
async def records(clean_db: str) -> AsyncIterator[CaseRecords]:
    found = await CaseRecords.open(clean_db, timeout_s=5)
    yield found
    await found.close()


async def test_the_record_reads_what_case_store_wrote(
    records: CaseRecords, db: asyncpg.Connection  # noqa: F811
) -> None:
    def outcome(key: str, result: str, provider_message_id: str | None) -> NotificationOutcome:
        return NotificationOutcome(
            ref="CS-7K3M9Q", notification_key=key, channel=Channel.SMS, recipient="+14155550100",
            template="case_resolved", provider="twilio", outcome=result,
            provider_message_id=provider_message_id, reason=None if provider_message_id else "x",
        )

    # Written by case-store's own code; no case row is needed for the record itself.
    for key, result, mid in (("e1/sms/+1", "sent", "SM1"), ("e2/sms/+1", "failed", None),
                             ("e3/sms/+1", "sent", "SM3")):
        await repo.record_delivery(db, None, outcome(key, result, mid))  # type: ignore[arg-type]
    # Twilio reported e3 failed after taking it (as case-store applies a delivery update).
    await db.execute("UPDATE deliveries SET status = 'failed' WHERE notification_key = 'e3/sms/+1'")
    # A notifier that could not tell reports e1 failed: what went out stays on the record.
    failed_again = outcome("e1/sms/+1", "failed", None)
    await repo.record_delivery(db, None, failed_again)  # type: ignore[arg-type]
    assert await db.fetchval(
        "SELECT status FROM deliveries WHERE notification_key = 'e1/sms/+1'") == "sent"
    found = await records.recorded(["e1/sms/+1", "e2/sms/+1", "e3/sms/+1", "e4/sms/+1"])
    assert found == {
        "e1/sms/+1": Recorded(Claim.DONE, provider_message_id="SM1"),
        "e2/sms/+1": Recorded(Claim.FAILED, Failure("x", permanent=False)),
        "e3/sms/+1": Recorded(Claim.DONE, provider_message_id="SM3"),  # it went out: never again
    }
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):  # read-only, whatever a bug tries
        await records._pool.execute("DELETE FROM deliveries")


async def test_an_assignee_is_found_among_case_stores_active_users(
    records: CaseRecords, db: asyncpg.Connection  # noqa: F811
) -> None:
    await db.execute(
        "INSERT INTO users (handle, name, email, slack_user, roles, active) VALUES "
        "('frank', 'Frank', 'frank@corp.example', 'U0FRANK', ARRAY['supervisor'], true), "
        "('gone', 'Gone', 'gone@corp.example', NULL, ARRAY['resolver'], false)"
    )
    assert await records.agent("frank") == AgentContact(
        user="frank", email="frank@corp.example", slack_user="U0FRANK"
    )
    assert await records.agent("gone") is None and await records.agent("nobody") is None


async def test_a_database_that_does_not_answer_is_unavailable_not_a_crash() -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/casegate"  # nothing listens
    records = await CaseRecords.open(nowhere, timeout_s=2)  # lazy: the start does not fail
    try:
        with pytest.raises(RecordUnavailable):
            await records.recorded(["k"])
        with pytest.raises(RecordUnavailable):
            await records.agent("frank")
    finally:
        await records.close()
