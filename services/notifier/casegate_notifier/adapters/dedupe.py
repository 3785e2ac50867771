"""The delivery ledger in Redis: at most one send per notification key, across replicas.

States of `<prefix>:notify:<key>`: absent (nobody tried), "sending" (a send holds a lease and
may still be running, or crashed: the lease expires), "done" (delivered; remembered for the
TTL), "failed" (permanently undeliverable). Claiming is one atomic script, one round trip.
"""

from __future__ import annotations

from enum import StrEnum

from redis.asyncio import Redis

# SET NX EX, and if someone was first, say what state they left.
_CLAIM = """
if redis.call('SET', KEYS[1], 'sending', 'NX', 'EX', ARGV[1]) then
  return 'claimed'
end
return redis.call('GET', KEYS[1]) or 'sending'
"""
# Give a claim back only if it is still a claim: never erase a "done" a slower peer wrote.
_RELEASE = """
if redis.call('GET', KEYS[1]) == 'sending' then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Claim(StrEnum):
    CLAIMED = "claimed"  # ours: send now
    DONE = "done"  # already delivered: only repeat the outcome
    FAILED = "failed"  # already failed for good: only repeat the outcome
    BUSY = "sending"  # someone else holds the lease: come back after it


class DeliveryLedger:
    def __init__(self, redis: Redis, prefix: str, lease_s: int, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease_s = lease_s
        self._ttl_s = ttl_s
        self._claim = redis.register_script(_CLAIM)
        self._release = redis.register_script(_RELEASE)

    @property
    def lease_s(self) -> int:
        return self._lease_s

    def key(self, dedupe_key: str) -> str:
        return f"{self._prefix}:notify:{dedupe_key}"

    async def claim(self, dedupe_key: str) -> Claim:
        state = await self._claim(keys=[self.key(dedupe_key)], args=[self._lease_s])
        if isinstance(state, bytes):
            state = state.decode()
        try:
            return Claim(state)
        except ValueError:  # an unknown value is nobody's to overwrite: treat it as held
            return Claim.BUSY

    async def mark_done(self, dedupe_key: str) -> None:
        await self._redis.set(self.key(dedupe_key), Claim.DONE.value, ex=self._ttl_s)

    async def mark_failed(self, dedupe_key: str) -> None:
        await self._redis.set(self.key(dedupe_key), Claim.FAILED.value, ex=self._ttl_s)

    async def release(self, dedupe_key: str) -> None:
        await self._release(keys=[self.key(dedupe_key)])
