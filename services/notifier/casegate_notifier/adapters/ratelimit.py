"""A send rate shared by every notifier replica: a GCRA bucket per key in Redis.

Each key (a sending number, a Slack channel) holds one value, the theoretical arrival time of
the next send. Reserving a slot is one atomic script on Redis's own clock (replicas' clocks
may differ): it answers how long to wait and moves the time on by one interval, so callers
sleep exactly until their slot instead of polling. A slot further away than `max_wait_s` is
not reserved: the caller reports a temporary failure and comes back later. A provider's 429
pauses the key for everyone (`pause`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import Redis

# Times in microseconds. ARGV: interval, burst, max wait. Returns the wait before this slot
# (>= 0, reserved) or minus the wait (< 0, too far away: nothing reserved).
_RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - interval * (tonumber(ARGV[2]) - 1) - now
if wait < 0 then wait = 0 end
if wait > tonumber(ARGV[3]) then return -math.max(wait, 1) end
local nxt = tat + interval
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
return wait
"""
# Nobody sends on this key before now + ARGV[1] microseconds.
_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local until_ = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < until_ then
  local ttl = math.floor(tonumber(ARGV[1]) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%d', until_), 'PX', ttl)
end
return 1
"""


class TooLong(Exception):
    """The next free slot is further away than the caller may wait."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"next send slot in {wait_s:.1f}s")
        self.wait_s = wait_s


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int = 1  # sends that may go back to back after a quiet spell


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str, max_wait_s: float) -> None:
        self._prefix = prefix
        self.max_wait_s = max_wait_s
        self._max_wait_us = int(max_wait_s * 1_000_000)
        self._reserve = redis.register_script(_RESERVE)
        self._pause = redis.register_script(_PAUSE)

    def key(self, name: str) -> str:
        return f"{self._prefix}:ratelimit:{name}"

    async def wait_turn(self, name: str, rate: Rate) -> float:
        """Reserve the next slot on `name` and sleep until it; returns the seconds waited.
        Raises TooLong (nothing reserved) when that would exceed the maximum wait."""
        interval_us = max(1, int(1_000_000 / rate.per_second))
        wait_us = int(
            await self._reserve(
                keys=[self.key(name)], args=[interval_us, max(1, rate.burst), self._max_wait_us]
            )
        )
        if wait_us < 0:
            raise TooLong(-wait_us / 1_000_000)
        if wait_us:
            await asyncio.sleep(wait_us / 1_000_000)
        return wait_us / 1_000_000

    async def pause(self, name: str, seconds: float) -> None:
        """The provider asked us to hold off (429 Retry-After): every replica holds off."""
        await self._pause(keys=[self.key(name)], args=[int(seconds * 1_000_000)])
