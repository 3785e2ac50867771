"""The acknowledgement cap against the real Redis: a sender gets at most N acknowledgements an
hour, a redelivered event is not counted twice, other senders are not affected."""

from __future__ import annotations

from redis.asyncio import Redis

from casegate_notifier.adapters.acklimit import AckLimiter


async def test_at_most_n_acknowledgements_per_sender_per_hour(redis_url: str, key_prefix: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        limiter = AckLimiter(redis, key_prefix, per_hour=2)
        assert await limiter.allow("Pat@Example.com", "e1")
        assert await limiter.allow("pat@example.com", "e2")
        assert not await limiter.allow("pat@example.com", "e3")  # the third in the hour
        assert await limiter.allow("pat@example.com", "e1")  # a redelivery of one counted
        assert await limiter.allow("kim@example.com", "e3")  # someone else
    finally:
        await redis.aclose()
