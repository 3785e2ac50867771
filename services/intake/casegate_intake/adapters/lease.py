"""A renewed lease in Redis: which intake replica works one mailbox right now.

The holder renews well before the lease runs out; a replica that dies stops renewing and
another takes over after at most `ttl_s`. The lease only avoids double work: two holders
at once (a paused process, a Redis failover) cost duplicate publishes, which the dedupe
key absorbs downstream, never a lost message. Locally the lease counts as held only until
the moment it could have expired, measured from before the renewing call was sent.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# Take the lease if it is free, renew it if it is ours; one round trip, atomic.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""
# Give it back only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, redis: Redis, key: str, owner: str, ttl_s: float) -> None:
        self.key = key
        self.owner = owner
        self.ttl_s = ttl_s
        self._acquire = redis.register_script(_ACQUIRE)
        self._release = redis.register_script(_RELEASE)
        self._valid_until = 0.0
        self._gained = asyncio.Event()

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    async def try_acquire(self) -> bool:
        """Take or renew the lease; False if another holder has it or Redis cannot say."""
        started = time.monotonic()
        try:
            ttl_ms = int(self.ttl_s * 1000)
            ours = bool(await self._acquire(keys=[self.key], args=[self.owner, ttl_ms]))
        except (RedisError, OSError) as exc:
            log.warning("lease not renewed", extra={"lease": self.key, "error": repr(exc)})
            return self.held
        if ours:
            self._valid_until = started + self.ttl_s * 0.9
            self._gained.set()
        else:
            self._valid_until = 0.0
            self._gained.clear()
        return ours

    async def wait_held(self) -> None:
        while not self.held:
            self._gained.clear()
            await self._gained.wait()

    async def keep(self) -> None:
        """Run for as long as the watcher runs: take the lease when free, renew while held."""
        while True:
            await self.try_acquire()
            await asyncio.sleep(self.ttl_s / 3)

    async def release(self) -> None:
        self._valid_until = 0.0
        try:
            await self._release(keys=[self.key], args=[self.owner])
        except (RedisError, OSError) as exc:  # it expires on its own
            log.warning("lease not released", extra={"lease": self.key, "error": repr(exc)})
