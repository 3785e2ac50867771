"""The delivery ledger against the real Redis: claim, lease, done, failed, release."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from casegate_notifier.adapters.dedupe import Claim, DeliveryLedger


@pytest.fixture
def ledger(redis: Redis) -> DeliveryLedger:
    return DeliveryLedger(redis, f"t{uuid.uuid4().hex[:8]}", lease_s=30, ttl_s=3600)


async def test_first_claim_wins_and_holds_a_lease(ledger: DeliveryLedger, redis: Redis) -> None:
    assert await ledger.claim("k") is Claim.CLAIMED
    assert await ledger.claim("k") is Claim.BUSY
    assert await redis.get(ledger.key("k")) == "sending"
    assert 0 < await redis.ttl(ledger.key("k")) <= 30


async def test_done_and_failed_are_remembered_for_the_ttl(
    ledger: DeliveryLedger, redis: Redis
) -> None:
    await ledger.claim("sent")
    await ledger.mark_done("sent")
    assert await ledger.claim("sent") is Claim.DONE
    assert 30 < await redis.ttl(ledger.key("sent")) <= 3600
    assert await ledger.sent_id("sent") is None
    await ledger.claim("texted")
    await ledger.mark_done("texted", "SM42")  # the provider's id, for repeats to name
    assert await ledger.claim("texted") is Claim.DONE
    assert await ledger.sent_id("texted") == "SM42"
    assert 30 < await redis.ttl(ledger.key("texted") + ":id") <= 3600
    await ledger.claim("bounced")
    await ledger.mark_failed("bounced")
    assert await ledger.claim("bounced") is Claim.FAILED


async def test_release_gives_a_claim_back_but_never_erases_a_result(
    ledger: DeliveryLedger, redis: Redis
) -> None:
    await ledger.claim("k")
    await ledger.release("k")
    assert await redis.exists(ledger.key("k")) == 0
    assert await ledger.claim("k") is Claim.CLAIMED
    await ledger.mark_done("k")
    await ledger.release("k")  # a slow peer giving back a claim it no longer holds
    assert await ledger.claim("k") is Claim.DONE


async def test_an_expired_lease_can_be_claimed_again(ledger: DeliveryLedger, redis: Redis) -> None:
    await redis.set(ledger.key("k"), "sending", px=50)  # a sender that crashed mid-send
    assert await ledger.claim("k") is Claim.BUSY
    await asyncio.sleep(0.1)
    assert await ledger.claim("k") is Claim.CLAIMED
