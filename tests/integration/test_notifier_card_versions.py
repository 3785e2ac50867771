"""The newest change each Slack card drew, against the real Redis: a card draws a change no
older than the one it shows, and remembers it for the TTL."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from casegate_notifier.adapters.card_versions import CardVersions
from tests.conftest import RUN_ID

REF = "CS-7K3M9Q"


@pytest.fixture
def versions(redis: Redis) -> CardVersions:
    return CardVersions(redis, f"t{RUN_ID}{uuid.uuid4().hex[:8]}", ttl_s=3600)


async def test_a_card_never_drawn_draws_and_remembers_the_change_for_the_ttl(
    versions: CardVersions, redis: Redis
) -> None:
    assert await versions.advance(REF, 7)
    assert await redis.get(versions.key(REF)) == "7"
    assert 30 < await redis.ttl(versions.key(REF)) <= 3600


async def test_an_older_change_does_not_draw_over_a_newer_one(
    versions: CardVersions, redis: Redis
) -> None:
    assert await versions.advance(REF, 20)
    assert not await versions.advance(REF, 19)
    assert await redis.get(versions.key(REF)) == "20"
    assert await versions.advance("CS-OTHER", 1)  # each case its own card


async def test_the_same_change_draws_again_and_a_newer_one_moves_the_card_on(
    versions: CardVersions, redis: Redis
) -> None:
    assert await versions.advance(REF, 20)
    assert await versions.advance(REF, 20)  # a retry after Slack failed must still land
    assert await versions.advance(REF, 10_000_000_001)  # ids are bigint, past 32 bits
    assert not await versions.advance(REF, 10_000_000_000)
    assert await redis.get(versions.key(REF)) == "10000000001"
