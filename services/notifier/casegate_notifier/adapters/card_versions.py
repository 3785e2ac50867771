"""Which change of a case its Slack card last showed, so an older snapshot never draws over
a newer one.

Each case change names the timeline entry it wrote (`entry_id`); case-store writes that entry
while it holds the case's row lock, so for one case the ids rise in the order the changes
committed. The notifier handles changes concurrently and retries a failed redraw later, so
they reach Slack in any order: before a redraw, one script compares the change's entry id
with the newest drawn (`<prefix>:card:<ref>`) and, unless it is older, stores it. Kept for the
dedupe TTL; when Redis forgets it, the next change simply draws.
"""

from __future__ import annotations

from redis.asyncio import Redis

# Equal draws again: a retry of the newest change after a failed Slack call must still land.
_ADVANCE = """
local drawn = tonumber(redis.call('GET', KEYS[1]))
if drawn and tonumber(ARGV[1]) < drawn then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class CardVersions:
    def __init__(self, redis: Redis, prefix: str, ttl_s: int) -> None:
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._advance = redis.register_script(_ADVANCE)

    def key(self, ref: str) -> str:
        return f"{self._prefix}:card:{ref}"

    async def advance(self, ref: str, entry_id: int) -> bool:
        """True when the change that wrote `entry_id` is no older than any drawn on the card
        (it is now the one recorded): draw it. False when a newer one was drawn already."""
        return bool(await self._advance(keys=[self.key(ref)], args=[entry_id, self._ttl_s]))
