"""A cap on acknowledgements to one sender: a mail loop or a flood from one address must not
make us mail it back hundreds of times. Shared by all replicas in Redis: per address, a sorted
set of the events acknowledged in the last hour. A redelivered event that was already counted
is allowed again (it is the same acknowledgement, and the ledger stops a second send)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

WINDOW_S = 3600

_ALLOW = """
local now, window, limit, event = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZSCORE', KEYS[1], event) then return 1 end
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, event)
redis.call('EXPIRE', KEYS[1], window)
return 1
"""


class AckLimiter:
    def __init__(self, redis: Redis, prefix: str, per_hour: int) -> None:
        self._redis, self._prefix, self._per_hour = redis, prefix, per_hour
        self._allow = redis.register_script(_ALLOW)

    async def allow(self, address: str, event_id: str) -> bool:
        key = f"{self._prefix}:acks:{address.strip().lower()}"
        allowed = await self._allow(keys=[key],
                                    args=[time.time(), WINDOW_S, self._per_hour, event_id])
        return bool(int(allowed))
