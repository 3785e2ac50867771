"""Digests in Redis: updates for one recipient collect in a list until their window ends, then go
out as one message, never twice and never losing one, also when a flush is retried.

Per recipient (`<medium>:<address>`):
- `...:items`, the list new updates are appended to. An update is appended once: a marker per
  update key (`<prefix>:digest:seen:<key>`) turns a redelivered event into a no-op.
- `<prefix>:digest:due`, a sorted set: when each recipient's window ends (set by the first
  update of a window, not moved by later ones).
- A flush claims the batch in one script: the list is renamed to `...:batch` and its id is
  written to `...:sending`. Updates arriving meanwhile start a fresh list, so none is lost.
  A flush that finds `...:sending` already set (the last one crashed or is being retried)
  gets the same batch with the same id back; the delivery key is derived from that id, so the
  ledger lets it out once.
- `complete` removes the batch only if it is still the one named, and keeps the recipient
  due if new updates came in while it was sent.
"""

from __future__ import annotations

from datetime import datetime

from redis.asyncio import Redis

from .schedule import DueSet, score

_APPEND = """
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[3]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[4])
  return 1
end
return 0
"""
_FLUSH = """
local current = redis.call('GET', KEYS[2])
if current then
  return {current, redis.call('LRANGE', KEYS[3], 0, -1)}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
redis.call('RENAME', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], ARGV[1])
return {ARGV[1], redis.call('LRANGE', KEYS[3], 0, -1)}
"""
_COMPLETE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZADD', KEYS[4], ARGV[2], ARGV[3])
else
  redis.call('ZREM', KEYS[4], ARGV[3])
end
return 1
"""


class DigestStore:
    def __init__(self, redis: Redis, prefix: str, seen_ttl_s: int) -> None:
        self._prefix = prefix
        self._seen_ttl_s = seen_ttl_s
        self.due = DueSet(redis, f"{prefix}:digest:due")
        self._append = redis.register_script(_APPEND)
        self._flush = redis.register_script(_FLUSH)
        self._complete = redis.register_script(_COMPLETE)

    def _keys(self, recipient: str) -> tuple[str, str, str]:
        base = f"{self._prefix}:digest:{recipient}"
        return f"{base}:items", f"{base}:sending", f"{base}:batch"

    async def append(self, recipient: str, update_key: str, update: str, due_at: datetime) -> bool:
        """Add one update (once per key); the first of a window sets when it goes out."""
        items, _, _ = self._keys(recipient)
        added = await self._append(
            keys=[items, self.due.key, f"{self._prefix}:digest:seen:{update_key}"],
            args=[update, score(due_at), self._seen_ttl_s, recipient],
        )
        return bool(added)

    async def flush(self, recipient: str, new_batch_id: str) -> tuple[str, list[str]] | None:
        """The batch to send (an unfinished one first), or None when there is nothing."""
        reply = await self._flush(keys=list(self._keys(recipient)), args=[new_batch_id])
        if not reply:
            return None
        batch_id, raw = reply
        as_text = [r.decode() if isinstance(r, bytes) else r for r in raw]
        return (batch_id.decode() if isinstance(batch_id, bytes) else batch_id), as_text

    async def complete(self, recipient: str, batch_id: str, next_due: datetime) -> bool:
        items, sending, batch = self._keys(recipient)
        done = await self._complete(
            keys=[items, sending, batch, self.due.key],
            args=[batch_id, score(next_due), recipient],
        )
        return bool(done)
