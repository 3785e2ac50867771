"""Notifications that wait in Redis for a time: held through a customer's quiet hours, or, once
released, waiting to retry. A sorted set orders them by due time; a hash keeps each one.

Why Redis and not the bus's Defer: a quiet night lasts hours, and the bus's longest delay queue
holds a message for seconds, so a Defer would send every held notification round the broker
thousands of times a night. A sorted set holds it once, until a timer task takes it.

Taking due entries leases them (their due time moves `lease_s` ahead in the same script), so
two replicas draining at once never take the same entry, and one that dies mid-send leaves it
to be taken again when the lease ends; the delivery ledger absorbs the repeat. Redis must
persist (AOF) in production: a flushed Redis forgets what it holds.
"""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

# ARGV: now, limit, lease end. Returns [member, payload-or-false, member, ...].
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], member)
  table.insert(out, member)
  table.insert(out, redis.call('HGET', KEYS[2], member) or '')
end
return out
"""
# Hold once: a redelivered event must not move (or duplicate) a notification already held.
_HOLD = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def score(moment: datetime) -> float:
    return moment.timestamp()


class DueSet:
    """Members with due times and an optional payload each."""

    def __init__(self, redis: Redis, key: str) -> None:
        self._redis = redis
        self.key = key
        self.payloads = f"{key}:payloads"
        self._take = redis.register_script(_TAKE_DUE)
        self._hold = redis.register_script(_HOLD)

    async def put_once(self, member: str, payload: str, at: datetime) -> bool:
        args = [member, payload, score(at)]
        return bool(await self._hold(keys=[self.key, self.payloads], args=args))

    async def take_due(self, now: datetime, limit: int, lease_s: float) -> list[tuple[str, str]]:
        flat = await self._take(
            keys=[self.key, self.payloads], args=[score(now), limit, score(now) + lease_s]
        )
        flat = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
        return list(zip(flat[0::2], flat[1::2], strict=True))

    async def later(self, member: str, at: datetime) -> None:
        await self._redis.zadd(self.key, {member: score(at)}, xx=True)

    async def schedule(self, member: str, at: datetime) -> None:
        await self._redis.zadd(self.key, {member: score(at)}, nx=True)

    async def remove(self, member: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.key, member)
            pipe.hdel(self.payloads, member)
            await pipe.execute()

    async def size(self) -> int:
        return int(await self._redis.zcard(self.key))

    async def next_due(self) -> float | None:
        first = await self._redis.zrange(self.key, 0, 0, withscores=True)
        return float(first[0][1]) if first else None


class HeldNotifications(DueSet):
    """`<prefix>:held`: notifications waiting for the end of quiet hours or for a retry."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        super().__init__(redis, f"{prefix}:held")
