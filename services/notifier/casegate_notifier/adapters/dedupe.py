"""The delivery ledger in Redis: at most one send per notification key, across replicas.

States of `<prefix>:notify:<key>`: absent (nobody tried), "sending" (a send holds a lease and
may still be running, or crashed: the lease expires), "done" (delivered; remembered for the
TTL, with the provider's message id in `<key>:id` so a repeated outcome names it), "failed"
(undeliverable; `<key>:why` keeps the reason, so a redelivery can repeat the same outcome or
move on to the fallback channel). Claiming is one atomic script, one round trip.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from ..domain.delivery import Claim, Failure

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

    async def mark_done(self, dedupe_key: str, provider_message_id: str | None = None) -> None:
        if provider_message_id is None:
            await self._redis.set(self.key(dedupe_key), Claim.DONE.value, ex=self._ttl_s)
            return
        # The id beside the state: a repeat's outcome names what the provider said, not a
        # made-up id (case-store keeps a card's Slack thread and matches reports by it).
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.key(dedupe_key)}:id", provider_message_id, ex=self._ttl_s)
            pipe.set(self.key(dedupe_key), Claim.DONE.value, ex=self._ttl_s)
            await pipe.execute()

    async def sent_id(self, dedupe_key: str) -> str | None:
        raw = await self._redis.get(f"{self.key(dedupe_key)}:id")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def mark_failed(self, dedupe_key: str, failure: Failure | None = None) -> None:
        failure = failure or Failure("failed permanently on an earlier attempt")
        why = json.dumps({"reason": failure.reason, "permanent": failure.permanent})
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self.key(dedupe_key)}:why", why, ex=self._ttl_s)
            pipe.set(self.key(dedupe_key), Claim.FAILED.value, ex=self._ttl_s)
            await pipe.execute()

    async def failure(self, dedupe_key: str) -> Failure:
        raw = await self._redis.get(f"{self.key(dedupe_key)}:why")
        try:
            doc = json.loads(raw) if raw else {}
            return Failure(str(doc["reason"]), bool(doc.get("permanent", True)))
        except (ValueError, KeyError, TypeError):
            return Failure("failed permanently on an earlier attempt")

    async def release(self, dedupe_key: str) -> None:
        await self._release(keys=[self.key(dedupe_key)])
